"""Reading tabular files (Parquet, CSV, JSON Lines) and validating log rows with Arrow compute."""

from __future__ import annotations

import enum
import json
import re
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import BinaryIO, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from mlsleuth.errors import InputError, ReadError, SchemaError
from mlsleuth.schema._roles import RESERVED, Role, role_of

__all__ = [
    "MAX_COLUMN_NAME",
    "PARTITIONS_KEY",
    "TIMESTAMP",
    "TIME_PARTITIONS",
    "VALUE_RTOL",
    "DataKind",
    "Validated",
    "at_least",
    "at_most",
    "check_column_names",
    "is_table_like",
    "plain_types",
    "read_table",
    "source_path",
    "validate",
]

#: The one timestamp type mlsleuth stores: microseconds, UTC.
TIMESTAMP = pa.timestamp("us", tz="UTC")

#: Relative tolerance wherever a production value is compared with a reference's decile edge or range.
#: The same number reaches mlsleuth in several encodings: float32(0.55) is 0.5500000119, pandas writes
#: JSON with 10 significant digits, a decimal column is cast. float32 keeps ~7 digits (relative step
#: 6e-8), so 1e-6 is above every such rounding and far below any real change of a feature.
VALUE_RTOL = 1e-6


def at_most(edge: float) -> float:
    """The bound for "value <= edge" that lets through values equal to ``edge`` up to :data:`VALUE_RTOL`.

    Examples
    --------
    >>> import numpy as np
    >>> float(np.float32(0.55)) <= at_most(0.55)
    True
    """
    return float(edge) + abs(float(edge)) * VALUE_RTOL


def at_least(edge: float) -> float:
    """The bound for "value >= edge" with :data:`VALUE_RTOL` of slack (the mirror of :func:`at_most`)."""
    return float(edge) - abs(float(edge)) * VALUE_RTOL


_NUMBER = r"^\s*[-+]?((\d+\.?\d*)|(\.\d+))([eE][-+]?\d+)?\s*$|^\s*[-+]?(nan|NaN|inf|Infinity)\s*$"


#: The longest column name mlsleuth accepts (every name is quoted into the SQL of every query that reads it).
MAX_COLUMN_NAME = 256
#: Characters no column name may hold: C0/C1 control characters (NUL, new line, tab, escape...) and the
#: Unicode line and paragraph separators, which break SQL, logs and reports alike.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def check_column_names(names: Iterable[str], *, path: str | Path | None = None) -> None:
    """Refuse column names that must never reach SQL.

    The rule for every name mlsleuth stores or queries: 1 to :data:`MAX_COLUMN_NAME` characters,
    none of them a control character (``\\x00``-``\\x1f``, ``\\x7f``-``\\x9f``) or a Unicode line or
    paragraph separator. Everything else is allowed and kept as it is: quotes, semicolons, spaces,
    dots, slashes, SQL keywords, non-Latin letters. Such names are never pasted into SQL raw:
    queries quote them with :func:`mlsleuth.store._engine.quote_ident`. (:func:`validate` reads
    an empty name, a CSV's unnamed index column, as ``unnamed_<position>`` before this check.)

    Raises
    ------
    SchemaError
        Naming the column (as a Python literal, so a control character shows) and what is wrong.
    """
    for name in names:
        if not isinstance(name, str) or not name:
            raise SchemaError(f"column name {name!r}: expected a non-empty text name", path=path)
        if len(name) > MAX_COLUMN_NAME:
            raise SchemaError(f"column name {name[:60]!r}... has {len(name)} characters; at most {MAX_COLUMN_NAME} "
                              "are allowed: shorten it", path=path, column=name[:60])
        bad = _CONTROL.search(name)
        if bad is not None:
            raise SchemaError(f"column name {name!r} holds the control character {bad.group()!r} at position "
                              f"{bad.start()}; names may hold any character but control characters: rename it",
                              path=path, column=name)


def name_unnamed(table: pa.Table) -> tuple[pa.Table, tuple[tuple[str, str], ...]]:
    """Give each column whose name is empty (a CSV written with pandas' index) the name ``unnamed_<position>``.

    Returns the table and the ``(old, new)`` names given.
    """
    names = table.column_names
    if all(names):
        return table, ()
    taken = set(names)
    out, renamed = [], []
    for i, n in enumerate(names):
        if n:
            out.append(n)
            continue
        new = f"unnamed_{i}"
        while new in taken:
            new += "_"
        taken.add(new)
        out.append(new)
        renamed.append((n, new))
    return table.rename_columns(out), tuple(renamed)


class DataKind(enum.Enum):
    """What a file holds, which fixes what its rows need."""

    LOG = "log"
    REFERENCE = "reference"
    LABELS = "labels"


#: Suffixes each reader takes; a name with none of them is refused with the list.
_PARQUET = (".parquet", ".pq", ".parq")
_CSV = (".csv", ".csv.gz", ".tsv", ".tsv.gz")
_JSON = (".jsonl", ".ndjson", ".json", ".jsonl.gz", ".ndjson.gz", ".json.gz")
_IPC = (".feather", ".arrow", ".ipc", ".arrows")
#: Hive partition names that only repeat the request time (``log/date=2026-03-02/``): not a segment.
TIME_PARTITIONS = frozenset({"date", "dt", "ds", "day", "hour", "year", "month", "week", "minute"})
#: Schema metadata key listing the hive partition columns a folder's path gave (comma-separated).
PARTITIONS_KEY = b"mlsleuth.partitions"


def is_table_like(obj: object) -> bool:
    """Whether ``obj`` is tabular data in memory: an Arrow table or anything with ``__arrow_c_stream__``.

    pandas (2.2+) and polars DataFrames, DuckDB relations and Arrow record-batch readers all qualify.
    """
    return isinstance(obj, pa.Table | pa.RecordBatch) or hasattr(obj, "__arrow_c_stream__")


def source_path(obj: object) -> Path | None:
    """The path a table came from, for messages; None for data in memory."""
    return Path(obj) if isinstance(obj, str | Path) else None


def read_table(source: str | Path | object, *, delimiter: str | None = None) -> pa.Table:
    """Read a file, a folder or a DataFrame into an Arrow table with plain types.

    Files: Parquet, CSV/TSV, JSON Lines, a JSON array of records (what pandas'
    ``to_json(orient="records")`` writes) and Feather/Arrow IPC. A folder may mix them, file by file
    (hive ``key=value`` folders become columns, listed in the schema metadata under
    ``mlsleuth.partitions``). In memory: an Arrow table, or any object with the Arrow PyCapsule
    interface ``__arrow_c_stream__`` (pandas and polars DataFrames).

    Types are made plain whatever wrote them, so the same values read the same from every
    encoding: ``string_view``/``large_string`` become ``string``, dictionary columns their values,
    ``float16``/``float32``/decimal become ``float64``.

    Parameters
    ----------
    source
        A path, or tabular data in memory.
    delimiter
        The CSV field separator (e.g. ``;``); by default ``,`` (tab for ``.tsv``).

    Raises
    ------
    ReadError
        Naming the file and what is wrong with it (missing, empty, truncated, not the format its name
        says), and what to do.
    """
    if not isinstance(source, str | Path):
        return plain_types(_in_memory(source))
    p = Path(source)
    if not p.exists():
        raise ReadError("file not found", path=p)
    if p.is_dir():
        return _read_folder(p, delimiter=delimiter)
    return plain_types(_read_file(p, delimiter=delimiter))


def _in_memory(obj: object) -> pa.Table:
    if isinstance(obj, pa.Table):
        return obj
    if isinstance(obj, pa.RecordBatch):
        return pa.Table.from_batches([obj])
    if not hasattr(obj, "__arrow_c_stream__"):
        raise ReadError(f"expected a path, an Arrow table or a DataFrame (an object with __arrow_c_stream__), "
                        f"got {type(obj).__name__}; pass a file path or convert it with pyarrow.table(...)")
    try:
        return pa.table(obj)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError) as e:
        raise ReadError(f"cannot read the {type(obj).__name__} as an Arrow table: {e}") from e


def _read_file(p: Path, *, delimiter: str | None = None) -> pa.Table:
    name = p.name.lower()
    try:
        if name.endswith(_PARQUET):
            return _read_parquet(p)
        if name.endswith(_CSV):
            return _read_csv(p, delimiter)
        if name.endswith(_JSON):
            return _read_json(p)
        if name.endswith(_IPC):
            return _read_ipc(p)
    except ReadError:
        raise
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError, UnicodeDecodeError) as e:
        raise ReadError(f"cannot read it as {_format_of(name)}: {e}", path=p) from e
    raise ReadError("unknown format; expected a .parquet file or folder, .csv, .tsv, .jsonl, .json (JSON Lines or an "
                    "array of records) or .feather/.arrow (Arrow IPC)", path=p)


def _read_csv(p: Path, delimiter: str | None) -> pa.Table:
    sep = delimiter or ("\t" if ".tsv" in p.name.lower() else ",")
    opts = pacsv.ParseOptions(delimiter=sep)
    # Timestamps are parsed by ``validate`` so that a bad one costs one row, not the file.
    conv = pacsv.ConvertOptions(timestamp_parsers=[], strings_can_be_null=True)
    try:
        table = pacsv.read_csv(p, parse_options=opts, convert_options=conv)
        # Arrow checks values but not the header for UTF-8: decode the names here, not in the caller.
        header = table.column_names
    except pa.ArrowInvalid as e:
        if delimiter is None:
            _semicolon_hint(p, _first_line(p))
        raise ReadError(f"cannot read it as CSV: {e}", path=p) from e
    if delimiter is None and len(header) == 1:
        _semicolon_hint(p, header[0])
    return _decimal_commas(table) if sep != "," else table


def _open(p: Path) -> BinaryIO:
    """The file's bytes, decompressed when its name ends with ``.gz``."""
    import gzip

    return cast(BinaryIO, gzip.open(p)) if p.name.lower().endswith(".gz") else p.open("rb")


def _first_line(p: Path) -> str:
    with _open(p) as f:
        return f.readline().decode("utf-8", "replace").strip()


def _semicolon_hint(p: Path, header: str) -> None:
    if header.count(";") > header.count(","):
        raise ReadError(f"the header {header[:40]!r}... is separated by ';' (as Excel writes with decimal commas); "
                        "pass --csv-delimiter ';' (delimiter=';'), or export it with ',' and '.' for decimals",
                        path=p)


_DECIMAL_COMMA = r"^\s*[-+]?(\d*,\d+|\d+)([eE][-+]?\d+)?\s*$"


def _decimal_commas(table: pa.Table) -> pa.Table:
    """Numbers written with a decimal comma (``0,55``, as ``;``-separated CSV from Excel has them) as numbers."""
    for i, name in enumerate(table.column_names):
        col = table.column(i)
        if not pa.types.is_string(col.type) or col.null_count == len(col):
            continue
        if not pc.all(pc.match_substring_regex(col, _DECIMAL_COMMA)).as_py() \
                or not pc.any(pc.match_substring(col, ",")).as_py():
            continue
        values = pc.utf8_trim_whitespace(pc.replace_substring(col, ",", "."))
        table = table.set_column(i, name, values.cast(pa.float64()))
    return table


def _read_parquet(p: Path) -> pa.Table:
    # A local file: pre-buffering (coalesced reads, for object stores) copies every column chunk of a wide
    # file once more; without it a 1.7 GB, 1,000-column log reads in ~2.5 s of CPU instead of 7 to 13.
    return pq.read_table(p, pre_buffer=False)


def _read_unsuffixed(p: Path) -> pa.Table:
    """A file in a folder whose name has no known suffix (Spark's ``part-00000``): Parquet, as folders always were."""
    try:
        return _read_parquet(p)
    except (pa.ArrowInvalid, OSError) as e:
        raise ReadError(f"cannot read it as Parquet (a file in a folder without a known suffix): {e}; give it the "
                        "suffix of its format or move it out of the folder", path=p) from e


def _read_json(p: Path) -> pa.Table:
    """JSON Lines, or one JSON array of records (``df.to_json(orient="records")``)."""
    with _open(p) as f:
        head = f.read(4096).lstrip()
    if not head.startswith(b"["):
        return pajson.read_json(p, parse_options=pajson.ParseOptions(newlines_in_values=False))
    with _open(p) as f:
        try:
            rows = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ReadError(f"cannot read it as a JSON array of records: {e}", path=p) from e
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise ReadError("a JSON array must hold one object per row ({\"ts\": ..., ...}); write it with "
                        "df.to_json(orient=\"records\") or as JSON Lines", path=p)
    if not rows:
        raise ReadError("the JSON array is empty", path=p)
    try:
        return pa.Table.from_pylist(rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        # Mixed types in a column (a number in one row, text in another): read every value as text;
        # ``validate`` parses the columns that must be numbers or times.
        names = list(dict.fromkeys(k for r in rows for k in r))
        return pa.table({n: pa.array([None if (v := r.get(n)) is None else str(v) for r in rows], pa.string())
                         for n in names})


def _read_ipc(p: Path) -> pa.Table:
    """Feather v2 / Arrow IPC file, or an Arrow IPC stream."""
    import pyarrow.ipc as ipc

    try:
        with pa.memory_map(str(p)) as src:
            return ipc.open_file(src).read_all()
    except pa.ArrowInvalid:
        pass
    try:
        import pyarrow.feather as feather

        return feather.read_table(p)  # Feather v1
    except (pa.ArrowInvalid, OSError):
        pass
    with pa.memory_map(str(p)) as src:
        return ipc.open_stream(src).read_all()


def _read_folder(p: Path, *, delimiter: str | None) -> pa.Table:
    """Every data file under ``p``, each read by its own reader, with its hive ``key=value`` folders as columns.

    Files of one folder may differ in format and types (a day written by pandas, the next by polars):
    each is read and made plain on its own, then the tables are stacked; a column whose types still
    differ between files is kept as text and parsed once by ``validate``.
    """
    files = sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith((".", "_"))
                   and not any(part.startswith((".", "_")) for part in f.relative_to(p).parent.parts))
    if not files:
        raise ReadError("the folder holds no data files", path=p)
    tables: list[pa.Table] = []
    partitions: list[str] = []
    for f in files:
        known = f.name.lower().endswith(_PARQUET + _CSV + _JSON + _IPC)
        t = plain_types(_read_file(f, delimiter=delimiter) if known else _read_unsuffixed(f))
        for part in f.relative_to(p).parent.parts:
            key, eq, value = part.partition("=")
            if not eq or not key:
                continue
            key = urllib.parse.unquote(key)
            if key not in partitions:
                partitions.append(key)
            if key not in t.column_names:
                t = t.append_column(key, pa.array([urllib.parse.unquote(value)] * t.num_rows, pa.string()))
        tables.append(t)
    table = _stack(tables, p)
    if partitions:
        meta = dict(table.schema.metadata or {})
        meta[PARTITIONS_KEY] = ",".join(partitions).encode()
        table = table.replace_schema_metadata(meta)
    return table


def _stack(tables: list[pa.Table], where: Path) -> pa.Table:
    if len(tables) == 1:
        return tables[0]
    types: dict[str, set[pa.DataType]] = {}
    for t in tables:
        for fld in t.schema:
            if not pa.types.is_null(fld.type):
                types.setdefault(fld.name, set()).add(fld.type)
    mixed = {n: ts for n, ts in types.items() if len(ts) > 1 and not all(_numeric_type(x) for x in ts)}
    if mixed:
        # Times of different units or zones (pandas writes ns, others us) become UTC microseconds, as
        # ``validate`` would make them; any other mix is kept as text for ``validate`` to parse.
        times = {n for n, ts in mixed.items() if all(pa.types.is_timestamp(x) for x in ts)}
        out = []
        for t in tables:
            for n in mixed:
                if n not in t.column_names or pa.types.is_null(t.schema.field(n).type):
                    continue
                col = t.column(n)
                try:
                    col = _utc_micros(col) if n in times else col.cast(pa.string())
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                    raise ReadError(f"column {n!r} is {' in one file, '.join(map(str, mixed[n]))} in another, and "
                                    f"cannot be read as text: {e}; write it with one type in every file",
                                    path=where) from e
                t = t.set_column(t.column_names.index(n), n, col)
            out.append(t)
        tables = out
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise ReadError(f"the folder's files have columns that cannot be stacked: {e}", path=where) from e


def plain_types(table: pa.Table) -> pa.Table:
    """The table with the types every reader agrees on (see :func:`read_table`); values unchanged."""
    fields = [pa.field(f.name, _plain(f.type), f.nullable, f.metadata) for f in table.schema]
    if all(f.type == g.type for f, g in zip(fields, table.schema, strict=True)):
        return table
    cols = []
    for col, fld in zip(table.columns, fields, strict=True):
        if pa.types.is_dictionary(col.type):
            col = col.cast(col.type.value_type)
        cols.append(col if col.type == fld.type else col.cast(fld.type))
    return pa.Table.from_arrays(cols, schema=pa.schema(fields, metadata=table.schema.metadata))


def _plain(t: pa.DataType) -> pa.DataType:
    if pa.types.is_dictionary(t):
        return _plain(t.value_type)
    if pa.types.is_string_view(t) or pa.types.is_large_string(t):
        return pa.string()
    if pa.types.is_binary_view(t) or pa.types.is_large_binary(t):
        return pa.binary()
    if pa.types.is_float16(t) or pa.types.is_float32(t) or pa.types.is_decimal(t):
        return pa.float64()
    return t


def _format_of(name: str) -> str:
    if name.endswith(_CSV):
        return "CSV"
    if name.endswith(_JSON):
        return "JSON"
    if name.endswith(_IPC):
        return "Arrow IPC (Feather)"
    return "Parquet"


@dataclass(frozen=True)
class Validated:
    """The outcome of validating a table: rows that passed, and the others with a reason.

    Attributes
    ----------
    good
        Rows that passed, with normalised types (``ts`` as UTC microseconds, numbers as float64).
    rejected
        One row per rejected row: ``row`` (1-based position in the input), ``reason`` and
        ``data`` (the row as JSON text).
    renamed
        ``(old, new)`` column names given to columns whose name was empty.
    """

    good: pa.Table
    rejected: pa.Table
    renamed: tuple[tuple[str, str], ...] = ()

    @property
    def n_rejected(self) -> int:
        """How many rows were rejected."""
        return self.rejected.num_rows


REJECTED_SCHEMA = pa.schema([("row", pa.int64()), ("reason", pa.string()), ("data", pa.string())])


def _is_text(t: pa.DataType) -> bool:
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t))


def _to_timestamp(arr: pa.ChunkedArray, fmt: str | None = None) -> tuple[pa.ChunkedArray, pa.ChunkedArray]:
    """Return (timestamps, parse-failed mask); nulls stay null and are not failures.

    ``fmt`` is a strptime layout for text times (``%d/%m/%Y %H:%M``); without an offset they are UTC.
    """
    t = arr.type
    if fmt is not None and _is_text(t):
        return _strptime(pc.utf8_trim_whitespace(arr.cast(pa.string())), fmt)
    if pa.types.is_timestamp(t):
        return _utc_micros(arr), _false(arr)
    if pa.types.is_date(t):
        return pc.assume_timezone(arr.cast(pa.timestamp("us")), "UTC").cast(TIMESTAMP), _false(arr)
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return _epoch_to_timestamp(arr), _false(arr)
    text = arr.cast(pa.string())
    text = pc.utf8_trim_whitespace(text)
    norm = pc.replace_substring_regex(text, r"[zZ]$", "+00:00")
    norm = pc.replace_substring_regex(norm, r"^(\d{4}-\d{2}-\d{2}) ", r"\1T")
    # Fast path: everything parses in one cast.
    try:
        return pc.cast(norm, TIMESTAMP), _false(arr)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    parsed = None
    for fmt, tz in (("%Y-%m-%dT%H:%M:%S%z", True), ("%Y-%m-%dT%H:%M:%S", False), ("%Y-%m-%d", False),
                    ("%Y-%m-%dT%H:%M%z", True), ("%Y-%m-%dT%H:%M", False)):
        stripped = norm if tz else pc.replace_substring_regex(norm, r"\+00:00$", "")
        cand = pc.strptime(stripped, format=fmt, unit="us", error_is_null=True)
        if not tz:
            cand = pc.assume_timezone(cand, "UTC")
        cand = cand.cast(TIMESTAMP)
        parsed = cand if parsed is None else pc.coalesce(parsed, cand)
    assert parsed is not None
    # Fractional seconds: strptime has no %f; retry those rows with the fraction cut off, then add it back.
    frac = pc.extract_regex(norm, r"^(?P<head>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})\.(?P<frac>\d{1,6})\d*(?P<tz>.*)$")
    if pc.any(pc.is_valid(frac)).as_py():
        head = pc.struct_field(frac, "head")
        tzs = pc.struct_field(frac, "tz")
        base = pc.strptime(pc.binary_join_element_wise(head, pc.if_else(pc.equal(tzs, ""), "+00:00", tzs), ""),
                           format="%Y-%m-%dT%H:%M:%S%z", unit="us", error_is_null=True).cast(TIMESTAMP)
        micros = pc.cast(pc.utf8_slice_codeunits(pc.binary_join_element_wise(pc.struct_field(frac, "frac"),
                                                                            "000000", ""), 0, 6), pa.int64())
        withfrac = pc.cast(pc.add(pc.cast(base, pa.int64()), micros), TIMESTAMP)
        parsed = pc.coalesce(parsed, withfrac)
    failed = pc.and_(pc.is_valid(text), pc.is_null(parsed))
    return parsed, failed


def _utc_micros(arr: pa.ChunkedArray) -> pa.ChunkedArray:
    """Timestamps as :data:`TIMESTAMP`: a zone-less time is UTC.

    Nanoseconds (what pandas computes in) are truncated to microseconds on purpose: mlsleuth
    stores microseconds, and a sub-microsecond digit says nothing about when a request was served.
    """
    return (arr if arr.type.tz is not None else pc.assume_timezone(arr, "UTC")).cast(TIMESTAMP, safe=False)


def _strptime(text: pa.ChunkedArray, fmt: str) -> tuple[pa.ChunkedArray, pa.ChunkedArray]:
    """Text times in a strptime layout; ``%f`` (fractional seconds, which Arrow's strptime lacks) is read here."""
    micros = None
    if "%f" in fmt:
        sep = fmt[fmt.index("%f") - 1] if fmt.index("%f") > 0 else ""
        fmt = fmt.replace(sep + "%f", "", 1)
        parts = pc.extract_regex(text, r"^(?P<head>.*?\d{2}:\d{2}:\d{2})(?:[.,](?P<frac>\d{1,9}))?(?P<tail>.*)$")
        text = pc.binary_join_element_wise(pc.struct_field(parts, "head"), pc.struct_field(parts, "tail"), "")
        frac = pc.binary_join_element_wise(pc.struct_field(parts, "frac"), "000000", "")
        micros = pc.cast(pc.utf8_slice_codeunits(frac, 0, 6), pa.int64())
    parsed = pc.strptime(text, format=fmt, unit="us", error_is_null=True)
    parsed = _utc_micros(parsed)
    if micros is not None:
        parsed = pc.cast(pc.add(pc.cast(parsed, pa.int64()), micros), TIMESTAMP)
    return parsed, pc.and_(pc.is_valid(text), pc.is_null(parsed))


#: Epoch units by the magnitude of the largest value: today is ~1.7e9 s, 1.7e12 ms, 1.7e15 µs, 1.7e18 ns,
#: so each bound leaves three orders of magnitude (dates up to year 5138 in each unit) before the next unit.
#: Each unit with its upper bound and its length in microseconds.
_EPOCH_UNITS = (("s", 1e11, 1_000_000.0), ("ms", 1e14, 1_000.0), ("us", 1e17, 1.0), ("ns", float("inf"), 1e-3))


def epoch_unit(biggest: float) -> str:
    """The unit (``s``, ``ms``, ``us`` or ``ns``) of epoch times whose largest magnitude is ``biggest``.

    Examples
    --------
    >>> [epoch_unit(x) for x in (1.77e9, 1.77e12, 1.77e15, 1.77e18)]
    ['s', 'ms', 'us', 'ns']
    """
    return next(unit for unit, bound, _ in _EPOCH_UNITS if biggest < bound)


def _epoch_to_timestamp(arr: pa.ChunkedArray) -> pa.ChunkedArray:
    """Epoch numbers as UTC microseconds, the unit inferred from the magnitude (integers stay exact)."""
    unit = epoch_unit(abs(float(pc.max(pc.abs(arr)).as_py() or 0)))
    micros = next(m for u, _, m in _EPOCH_UNITS if u == unit)
    if pa.types.is_integer(arr.type):
        ints = arr.cast(pa.int64())
        # Integer arithmetic: a nanosecond epoch (above 2**53) would lose digits as a float.
        us = (pc.divide(ints, pa.scalar(1_000, pa.int64())) if unit == "ns"
              else pc.multiply_checked(ints, pa.scalar(int(micros), pa.int64())))
        return us.cast(TIMESTAMP)
    return pc.multiply(arr.cast(pa.float64()), pa.scalar(micros)).cast(pa.int64(), safe=False).cast(TIMESTAMP)


def _false(arr: pa.ChunkedArray) -> pa.ChunkedArray:
    return pa.chunked_array([pa.array(np.zeros(len(arr), dtype=bool))])


def _to_number(arr: pa.ChunkedArray) -> tuple[pa.ChunkedArray, pa.ChunkedArray]:
    """Return (float64 values, failed mask) for a column that must be numeric."""
    t = arr.type
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t) or pa.types.is_boolean(t):
        return arr.cast(pa.float64()), _false(arr)
    if pa.types.is_null(t):
        return arr.cast(pa.float64()), _false(arr)
    text = arr.cast(pa.string())
    ok = pc.match_substring_regex(text, _NUMBER)
    clean = pc.if_else(ok, text, pa.scalar(None, pa.string()))
    values = pc.cast(pc.utf8_trim_whitespace(clean), pa.float64())
    failed = pc.and_(pc.is_valid(text), pc.invert(pc.fill_null(ok, False)))
    return values, pc.fill_null(failed, False)


def _mostly_numeric(arr: pa.ChunkedArray) -> bool:
    text = arr.cast(pa.string())
    valid = pc.sum(pc.is_valid(text).cast(pa.int64())).as_py() or 0
    if valid == 0:
        return False
    ok = pc.sum(pc.fill_null(pc.match_substring_regex(text, _NUMBER), False).cast(pa.int64())).as_py() or 0
    return ok / valid >= 0.9


_REQUIRED: Mapping[DataKind, tuple[tuple[str, ...], ...]] = {
    DataKind.LOG: (("ts",), ("score", "prediction")),
    DataKind.REFERENCE: (),
    DataKind.LABELS: (("request_id",), ("label",)),
}


def validate(
    table: pa.Table,
    kind: DataKind,
    *,
    path: str | Path | None = None,
    expected_types: Mapping[str, pa.DataType] | None = None,
    roles: Mapping[str, Role] | None = None,
    ts_format: str | None = None,
) -> Validated:
    """Check every row of a log, reference or labels table and normalise its types.

    Missing required columns make the whole table unusable (:class:`SchemaError`), and so does
    a column name outside the rule of :func:`check_column_names` (too long, or holding a control
    character); an empty name is read as ``unnamed_<position>``. A bad value costs only its
    row, which is returned in ``rejected`` with the reason. Rows are rejected for a missing or
    unparseable ``ts`` (logs), a non-numeric ``score`` or ``latency_ms``, a row with neither
    ``score`` nor ``prediction``, a ``request_id`` seen earlier in the table, or a value of the
    wrong type in a column whose type is known (``expected_types``, e.g. from what the store
    already holds).

    Parameters
    ----------
    table
        The rows as read.
    kind
        Log, reference or labels: fixes which columns are required.
    path
        The file the rows came from, for error messages.
    expected_types
        Types already established for some columns; values that cannot take them are rejected.
    roles
        Role overrides (column name to role), as in a model config; a column given the
        ``TIME`` role is renamed ``ts``, ``REQUEST_ID`` to ``request_id``, and so on.
    ts_format
        A strptime layout for text times that are not ISO 8601, e.g. ``%m/%d/%Y %H:%M`` for Excel's.
    """
    table, renamed = name_unnamed(table)
    check_column_names(table.column_names, path=path)
    table = plain_types(table)
    table = _apply_role_renames(table, roles or {}, path=path)
    names = set(table.column_names)
    for group in _REQUIRED[kind]:
        if not names.intersection(group):
            need = group[0] if len(group) == 1 else " or ".join(group)
            raise SchemaError(
                f"a {kind.value} needs a column {need}; it has {sorted(names)}. "
                "Rename the column, or map it with [roles] in the model config",
                path=path, column=group[0])
    expected = dict(expected_types or {})
    n = table.num_rows
    reasons = pa.chunked_array([pa.nulls(n, pa.string())])

    def reject(mask: pa.ChunkedArray | pa.Array,
               why: pa.ChunkedArray | pa.Array | str | Callable[[], pa.ChunkedArray]) -> None:
        nonlocal reasons
        mask = pc.fill_null(mask, False)
        if not pc.any(mask).as_py():
            return  # nothing rejected: skip building per-row reason text (the hot path of every append)
        reasons = pc.if_else(pc.and_(mask, pc.is_null(reasons)), why() if callable(why) else why, reasons)

    cols: dict[str, pa.ChunkedArray] = {}
    for name in table.column_names:
        arr = table.column(name)
        role = role_of(name)
        target = expected.get(name)
        if name in ("ts", "label_ts") and (kind is not DataKind.REFERENCE or name == "ts"):
            if pa.types.is_null(arr.type):
                values, failed = arr.cast(TIMESTAMP), _false(arr)
            else:
                values, failed = _to_timestamp(arr, ts_format)
            ts_reason = (f"{name}: expected a time in the layout {ts_format!r}, got " if ts_format else
                         f"{name}: expected an ISO-8601 timestamp such as 2026-03-06T18:00:00Z, got ")
            reject(failed, partial(_why, arr, ts_reason))
            if name == "ts" and kind is DataKind.LOG:
                reject(pc.is_null(arr), f"{name}: missing timestamp")
            cols[name] = values
        elif role in (Role.SCORE, Role.LATENCY) or (target is not None and _numeric_type(target)):
            values, failed = _to_number(arr)
            reject(failed, partial(_why, arr, f"{name}: expected a number, got "))
            cols[name] = values
        elif name in ("request_id", "model", "model_version", "error") or (target is not None and _is_text(target)):
            cols[name] = arr if _is_text(arr.type) else arr.cast(pa.string())
        elif role in (Role.FEATURE, Role.INPUT, Role.PREDICTION, Role.LABEL) and _is_text(arr.type) \
                and _mostly_numeric(arr):
            # A numeric column with a few bad values (CSV inference made it text): keep it numeric.
            values, failed = _to_number(arr)
            reject(failed, partial(_why, arr, f"{name}: expected a number, got "))
            cols[name] = values
        elif pa.types.is_null(arr.type):
            cols[name] = arr.cast(pa.float64() if role in (Role.FEATURE, Role.INPUT) else pa.string())
        else:
            cols[name] = arr
    if kind is DataKind.LOG and "score" in cols and "prediction" in cols:
        reject(pc.and_(pc.is_null(cols["score"]), pc.is_null(cols["prediction"])),
               "neither score nor prediction is set")
    if "request_id" in cols and kind is not DataKind.REFERENCE:
        rid = cols["request_id"]
        if kind is DataKind.LABELS:
            reject(pc.is_null(rid), "request_id: missing")
            reject(pc.is_null(cols["label"]), "label: missing")
        else:
            dup = _duplicated(rid)
            reject(dup, partial(pc.binary_join_element_wise, "request_id: duplicate of an earlier row (", rid, ")", ""))
    out = pa.table(cols)
    bad = pc.is_valid(reasons)
    n_bad = pc.sum(bad.cast(pa.int64())).as_py() or 0
    if n_bad == 0:
        return Validated(out, REJECTED_SCHEMA.empty_table(), renamed)
    good = out.filter(pc.invert(bad))
    idx = pc.indices_nonzero(bad.combine_chunks() if isinstance(bad, pa.ChunkedArray) else bad)
    raw = table.take(idx).to_pylist()
    rejected = pa.table({
        "row": pc.add(idx, 1).cast(pa.int64()),
        "reason": reasons.filter(bad),
        "data": [json.dumps(r, default=str) for r in raw],
    }, schema=REJECTED_SCHEMA)
    return Validated(good, rejected, renamed)


def read_log_rows(data: object) -> pa.Table:
    """A prediction log given as a file or in memory (a DataFrame, an Arrow table): its rows that pass :func:`validate`.

    Raises
    ------
    InputError
        When no row passes validation (the message gives the first reason).
    """
    checked = validate(read_table(data), DataKind.LOG, path=source_path(data))
    if checked.good.num_rows == 0:
        first = checked.rejected.column("reason")[0].as_py() if checked.n_rejected else "it is empty"
        raise InputError(f"no usable rows in the log; first reason: {first}", path=source_path(data))
    return checked.good


def _numeric_type(t: pa.DataType) -> bool:
    return bool(pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t))


def _why(arr: pa.ChunkedArray, prefix: str) -> pa.ChunkedArray:
    text = arr.cast(pa.string())
    quoted = pc.binary_join_element_wise("'", pc.utf8_slice_codeunits(text, 0, 40), "'", "")
    return pc.binary_join_element_wise(prefix, quoted, "")


def _duplicated(ids: pa.ChunkedArray) -> pa.ChunkedArray:
    """True for every row whose non-null id appeared in an earlier row."""
    n = len(ids)
    if n == 0:
        return pa.chunked_array([pa.array([], pa.bool_())])
    if pc.count_distinct(ids, mode="only_valid").as_py() == n - ids.null_count:
        return _false(ids)  # all distinct (the usual case): skip the group-by
    tbl = pa.table({"id": ids, "i": pa.array(range(n), pa.int64())})
    first = tbl.group_by("id", use_threads=False).aggregate([("i", "min")])
    firsts = pc.is_in(tbl.column("i"), value_set=first.column("i_min"))
    return pc.and_(pc.invert(firsts), pc.is_valid(ids))


def _apply_role_renames(table: pa.Table, roles: Mapping[str, Role], *, path: str | Path | None) -> pa.Table:
    canonical = {role: name for name, role in RESERVED.items()}
    renames = {}
    for col, role in roles.items():
        if col in table.column_names and role in canonical and canonical[role] != col:
            target = canonical[role]
            if target in table.column_names:
                raise SchemaError(f"[roles] maps {col!r} to {role.value}, but the file also has a column {target!r}",
                                  path=path, column=col)
            renames[col] = target
    if not renames:
        return table
    return table.rename_columns([renames.get(c, c) for c in table.column_names])
