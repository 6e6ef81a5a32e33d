"""What a diagnosis reads: the case's tables, events, lineage and model, validated once."""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mlsleuth.errors import InputError, SchemaError
from mlsleuth.schema import (
    MAX_SEGMENT_CARDINALITY,
    ChangeEvent,
    DataKind,
    Lineage,
    LogSchema,
    ModelConfig,
    Role,
    infer_schema,
    read_events,
    read_lineage,
    read_table,
    validate,
)
from mlsleuth.schema._tables import PARTITIONS_KEY, TIME_PARTITIONS, source_path
from mlsleuth.store import DuckDBEngine, Engine, LocalStore, Store
from mlsleuth.store._engine import Source, quote_ident, quote_literal

__all__ = ["CaseInput", "LabelJoinEngine", "LogView", "ScoreFn", "TableLike", "find_case_files", "load_case",
           "store_case"]

#: Tabular data in memory: an Arrow table, or a pandas/polars DataFrame (``__arrow_c_stream__``).
TableLike = Any

#: Scores a table of ``feature.*`` columns (prefix kept) into an array of scores.
ScoreFn = Callable[[pa.Table], np.ndarray]


@dataclass(frozen=True)
class CaseInput:
    """Everything one diagnosis looks at.

    Attributes
    ----------
    log
        The prediction log, validated (``ts`` in UTC), with ``label`` joined when labels were given: an
        Arrow table, or a :class:`LogView` the engine scans where it is stored.
    reference
        Training or reference data with the same column names, or None.
    events, lineage
        Change events and lineage (empty when not given).
    score_fn
        The model as a scoring function, or None.
    has_labels
        Whether any row of the log has a label.
    rejected_rows
        How many log rows failed validation and were left out.
    """

    log: pa.Table | LogView
    schema: LogSchema
    reference: pa.Table | None = None
    events: tuple[ChangeEvent, ...] = ()
    lineage: Lineage = field(default_factory=Lineage)
    score_fn: ScoreFn | None = None
    config: ModelConfig = field(default_factory=ModelConfig)
    has_labels: bool = False
    rejected_rows: int = 0
    notes: tuple[str, ...] = ()


_NAMES = {
    "log": ("log.parquet", "log.csv", "log.jsonl", "log.json", "log.ndjson", "log.tsv", "log"),
    "reference": ("reference.parquet", "reference.csv", "reference.jsonl", "reference.json", "reference.tsv",
                  "reference"),
    "labels": ("labels.parquet", "labels.csv", "labels.jsonl", "labels.json", "labels.tsv", "labels"),
    "events": ("events.jsonl", "events.json", "events.ndjson"),
    "lineage": ("lineage.json", "lineage.jsonl"),
    "model": ("model.joblib", "model.pkl", "model.pickle"),
    "config": ("mlsleuth.toml", "config.toml", "model.toml"),
}


def find_case_files(folder: str | Path) -> dict[str, Path]:
    """Find ``log.*``, ``reference.*``, ``labels.*``, ``events.jsonl``, ``lineage.json``, ``model.joblib``.

    Raises
    ------
    InputError
        When the folder does not exist or has no log.
    """
    d = Path(folder)
    if not d.is_dir():
        raise InputError("expected a case folder holding log.* (and reference.*, labels.*, events.jsonl, ...)",
                         path=d)
    found: dict[str, Path] = {}
    for role, names in _NAMES.items():
        for n in names:
            p = d / n
            if p.exists() and (p.is_file() or role in ("log", "reference", "labels")):
                found[role] = p
                break
        else:
            # Any other extension the readers know, e.g. log.csv.gz
            matches = sorted(d.glob(f"{role}.*"))
            if matches and role in ("log", "reference", "labels"):
                found[role] = matches[0]
    if "log" not in found:
        raise InputError(f"no log.* file in the case folder; it has {sorted(p.name for p in d.iterdir())}", path=d)
    return found


def load_model(spec: str | Path, feature_order: Sequence[str]) -> ScoreFn:
    """Load a joblib/pickle estimator or a ``module:function`` entry point as a scoring function."""
    import importlib

    text = str(spec)
    names = [c.removeprefix("feature.") for c in feature_order]
    if ":" in text and not Path(text).exists() and not text.startswith(("/", ".")):
        mod_name, _, fn_name = text.partition(":")
        try:
            fn = getattr(importlib.import_module(mod_name), fn_name)
        except (ImportError, AttributeError) as e:
            raise InputError(f"cannot import the entry point {text!r}: {e}", path=text) from e
        model: object = fn
    else:
        try:
            import joblib

            model = joblib.load(text)
        except FileNotFoundError:
            raise InputError("model file not found", path=text) from None
        except Exception as e:  # joblib/pickle raise many types for a corrupt file
            raise InputError(f"cannot load the model with joblib: {e}", path=text) from e

    def score(features: pa.Table) -> np.ndarray:
        import pandas as pd

        frame = pd.DataFrame({n: features.column(c).to_numpy(zero_copy_only=False)
                              for n, c in zip(names, feature_order, strict=True)})
        if hasattr(model, "predict_proba"):
            proba = np.asarray(model.predict_proba(frame))
            return proba[:, -1] if proba.ndim == 2 else proba
        if hasattr(model, "predict"):
            return np.asarray(model.predict(frame), dtype=np.float64)
        if callable(model):
            return np.asarray(model(frame), dtype=np.float64)
        raise InputError("the model has neither predict_proba nor predict and is not callable", path=text)

    return score


def _join_labels(log: pa.Table, labels: pa.Table) -> pa.Table:
    """Left-join the latest label per request_id onto the log (in the engine: a million rows join in a blink)."""
    if "request_id" not in log.column_names:
        raise SchemaError("labels were given but the log has no request_id to join them on", column="request_id")
    latest = "arg_max(label, label_ts)" if "label_ts" in labels.column_names else "last(label)"
    # Only the request ids go through the join, with their row numbers: the log's other columns (a
    # wide log holds gigabytes of them) are not copied, and the labels come back in the log's order.
    ids = pa.table({"i": pa.array(np.arange(log.num_rows, dtype=np.int64)), "request_id": log.column("request_id")})
    with DuckDBEngine() as eng:
        eng.register("l", ids)
        eng.register("lab", labels)
        label = eng.query(f"SELECT x.label FROM l LEFT JOIN (SELECT request_id, {latest} AS label "
                          "FROM lab GROUP BY request_id) AS x ON l.request_id = x.request_id ORDER BY l.i")
    if "label" in log.column_names:
        log = log.drop_columns(["label"])
    return log.append_column("label", label.column("label"))


def load_case(
    log: str | Path | TableLike,
    *,
    reference: str | Path | TableLike | None = None,
    labels: str | Path | TableLike | None = None,
    events: str | Path | Sequence[ChangeEvent] | None = None,
    lineage: str | Path | Lineage | None = None,
    model: str | Path | ScoreFn | None = None,
    config: ModelConfig | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    model_name: str | None = None,
    ts_format: str | None = None,
    delimiter: str | None = None,
) -> CaseInput:
    """Read and validate a case's inputs; bad rows are left out and counted.

    ``log``, ``reference`` and ``labels`` are paths (see :func:`~mlsleuth.schema.read_table` for the
    formats) or data in memory: Arrow tables, pandas or polars DataFrames. ``model_name`` keeps the
    rows of one model of a log that holds several; ``ts_format`` (a strptime layout) and ``delimiter``
    (the CSV separator) are for files not written in the usual ISO-8601 and comma-separated way.

    Raises
    ------
    InputError
        When a file is unreadable, a required column is missing (the message names which), or the log
        holds several models and ``model_name`` does not say which one to diagnose.
    """
    cfg = config or ModelConfig()
    raw = read_table(log, delimiter=delimiter)
    log_path = source_path(log)
    checked = validate(raw, DataKind.LOG, path=log_path, roles=cfg.roles, ts_format=ts_format)
    table = checked.good
    if table.num_rows == 0:
        first = checked.rejected.column("reason")[0].as_py() if checked.n_rejected else "empty file"
        column = first.split(":", 1)[0] if first.split(":", 1)[0] in raw.column_names else None
        fix = ("; for times in another layout pass --ts-format (ts_format=), e.g. '%d/%m/%Y %H:%M'"
               if column in ("ts", "label_ts") and ts_format is None and "ISO-8601" in first else "")
        raise InputError(f"no usable rows in the log after validation; first reason: {first}{fix}", path=log_path,
                         column=column)
    notes = []
    table, partition_notes = _drop_time_partitions(table, raw.schema.metadata)
    notes += partition_notes
    table, model_note = _one_model(table, model_name, log_path)
    if model_note:
        notes.append(model_note)
    if since is not None:
        table = table.filter(pc.greater_equal(table.column("ts"), pa.scalar(since, table.schema.field("ts").type)))
    if until is not None:
        table = table.filter(pc.less(table.column("ts"), pa.scalar(until, table.schema.field("ts").type)))
    if table.num_rows == 0:
        raise InputError("no log rows in the --since/--until range")
    notes += [f"the log's column {old!r} (no name) was read as {new!r}" for old, new in checked.renamed]
    has_labels = False
    if labels is not None:
        lab_raw = read_table(labels, delimiter=delimiter)
        lab_checked = validate(lab_raw, DataKind.LABELS, path=source_path(labels), ts_format=ts_format)
        if lab_checked.n_rejected:
            notes.append(f"{lab_checked.n_rejected:,} label rows failed validation and were left out "
                         f"(first: {lab_checked.rejected.column('reason')[0].as_py()})")
        table = _join_labels(table, lab_checked.good)
    if "label" in table.column_names:
        has_labels = (pc.sum(pc.is_valid(table.column("label")).cast(pa.int64())).as_py() or 0) > 0
        if labels is not None and not has_labels:
            notes.append("labels were given but none of their request_ids is in the log (after --since/--until "
                         "and --model-name): check that both files use the same ids")
        table, note = _align_label_type(table, cfg.positive_class)
        if note:
            notes.append(note)
    ref = None
    if reference is not None:
        ref_raw = read_table(reference, delimiter=delimiter)
        ref = validate(ref_raw, DataKind.REFERENCE, path=source_path(reference), roles=cfg.roles,
                       ts_format=ts_format).good
        ref, _ = _drop_time_partitions(ref, ref_raw.schema.metadata)
        # Align types: a reference column the log stores as text, or vice versa, is compared as text.
        for name in set(ref.column_names) & set(table.column_names):
            lt, rt = table.schema.field(name).type, ref.schema.field(name).type
            if _is_num(lt) != _is_num(rt):
                if name.startswith(("feature.", "input.")):
                    notes.append(f"{name} is {lt} in the log but {rt} in the reference")
                ref = ref.set_column(ref.column_names.index(name), name, ref.column(name).cast(pa.string()))
                table = table.set_column(table.column_names.index(name), name, table.column(name).cast(pa.string()))
    evs: tuple[ChangeEvent, ...] = ()
    if events is not None:
        evs = read_events(events) if isinstance(events, str | Path) else tuple(events)
    lin = Lineage()
    if lineage is not None:
        lin = read_lineage(lineage) if isinstance(lineage, str | Path) else lineage
    schema = infer_schema(table, roles=cfg.roles, segments=cfg.segments)
    score_fn: ScoreFn | None = None
    if model is not None:
        if callable(model) and not isinstance(model, str | Path):
            score_fn = model
        else:
            order = [c for c in (ref.column_names if ref is not None else table.column_names)
                     if c.startswith("feature.")]
            score_fn = load_model(model, order)
    if checked.n_rejected:
        notes.append(f"{checked.n_rejected} log rows failed validation and were left out "
                     f"(first: {checked.rejected.column('reason')[0].as_py()})")
    return CaseInput(log=table, schema=schema, reference=ref, events=evs, lineage=lin, score_fn=score_fn,
                     config=cfg, has_labels=has_labels, rejected_rows=checked.n_rejected, notes=tuple(notes))


def _drop_time_partitions(table: pa.Table, metadata: dict[bytes, bytes] | None) -> tuple[pa.Table, list[str]]:
    """Leave out the hive partition columns of a folder that only repeat the day or hour of ``ts``.

    ``log/date=2026-03-02/part.parquet`` gives every row a ``date`` that is a function of its time: as a
    segment it would be a different slice each day and blame whichever day the incident began.
    """
    names = [n for n in (metadata or {}).get(PARTITIONS_KEY, b"").decode().split(",") if n]
    drop = [n for n in names if n in table.column_names and n.lower() in TIME_PARTITIONS]
    if not drop:
        return table, []
    return table.drop_columns(drop), [
        f"folder partition {', '.join(drop)} (from the folder names) repeats the request time: not used as a column"]


def _one_model(table: pa.Table, model_name: str | None, path: Path | None) -> tuple[pa.Table, str | None]:
    """The rows of one model: a log of several needs ``model_name``, and the rows left out are said."""
    if "model" not in table.column_names:
        if model_name is not None:
            raise InputError(f"--model-name {model_name!r} was given but the log has no model column: leave it out "
                             "or add the column", path=path, column="model")
        return table, None
    counts = table.group_by("model").aggregate([("model", "count")]).to_pylist()
    models = sorted(str(r["model"]) for r in counts if r["model"] is not None)
    if model_name is None:
        if len(models) > 1:
            raise InputError(f"the log holds the requests of several models {models}: name one (--model-name, "
                             "model_name=) so that their traffic is not diagnosed as one model's", path=path,
                             column="model")
        return table, None
    if model_name not in models:
        raise InputError(f"the log has no rows of model {model_name!r}; it has models {models}", path=path,
                         column="model")
    keep = table.filter(pc.equal(table.column("model"), model_name))
    left = table.num_rows - keep.num_rows
    if not left:
        return keep, None
    others = [m for m in models if m != model_name]
    return keep, (f"{left:,} log rows of other models ({', '.join(others)}) were left out: only {model_name!r} "
                  "is diagnosed")


def _align_label_type(table: pa.Table, positive: object | None) -> tuple[pa.Table, str | None]:
    """Give text labels the type of numeric 0/1 predictions ('fraud'/'legit' -> 1/0), saying how."""
    if "prediction" not in table.column_names:
        return table, None
    lt, pt = table.schema.field("label").type, table.schema.field("prediction").type
    if _is_num(lt) or not _is_num(pt):
        return table, None
    label = table.column("label").cast(pa.string())
    values = [v for v in pc.unique(label.drop_null()).to_pylist() if v is not None]
    idx = table.column_names.index("label")
    try:  # numbers written as text
        return table.set_column(idx, "label", label.cast(pa.float64())), None
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    preds = set(pc.unique(table.column("prediction").drop_null()).to_pylist())
    if len(values) != 2 or not preds <= {0, 1}:
        return table.set_column(idx, "label", label), None
    counts = {v: int(pc.sum(pc.equal(label, v).cast(pa.int64())).as_py() or 0) for v in values}
    pos = str(positive) if positive is not None and str(positive) in counts else min(counts, key=lambda v: counts[v])
    mapped = pc.if_else(pc.equal(label, pos), 1, 0)
    neg = next(v for v in values if v != pos)
    return table.set_column(idx, "label", mapped.cast(pt)), (
        f"labels {pos!r}/{neg!r} were read as 1/0 to match the predictions ({pos!r}, the rarer, is the positive "
        "class; set positive_class in the config to choose)")


def _is_num(t: pa.DataType) -> bool:
    return bool(pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)
                or pa.types.is_boolean(t))


def numeric_columns(schema: LogSchema, table: pa.Table | LogView, roles: Sequence[Role]) -> list[str]:
    """Columns of the given roles whose type is numeric in ``table``."""
    return [c.name for c in schema.columns if c.role in roles and _is_num(table.schema.field(c.name).type)]


# --------------------------------------------------------------------------------------------- logs left on disk

#: Names the engine binds for a :class:`LogView`: its files, its label files, the log without labels.
_LOG_FILES, _LABEL_FILES, _PLAIN_LOG = "_mlsleuth_log_files", "_mlsleuth_label_files", "_mlsleuth_log"
#: The latest label of each request (by ``label_ts``, then ``ingested_at``), as the stores define it,
#: keyed by ``{key}`` of the request id (a 64-bit hash on engines that have one).
_LATEST_LABELS = (
    f"SELECT {{key}} AS k, label FROM (SELECT request_id, label, row_number() OVER (PARTITION BY request_id "
    f"ORDER BY {{order}}) AS _rn FROM {_LABEL_FILES} WHERE request_id IS NOT NULL) AS x WHERE _rn = 1"
)
#: Each request labelled once: the label files' rows as they are, with no de-duplication to pay per query.
_UNIQUE_LABELS = f"SELECT {{key}} AS k, label FROM {_LABEL_FILES} WHERE request_id IS NOT NULL"
#: A 64-bit hash of a request id per dialect. Joining on it instead of the text shrinks what a join of a
#: hundred million requests holds and spills; the chance that a request shares the hash of another's label
#: is ~4e-4 per diagnosis of a hundred million requests (one request of them mislabelled).
_KEY_HASH = {"duckdb": "hash", "spark": "xxhash64"}


def label_key(dialect: str, column: str) -> str:
    """The join key of a request id column on ``dialect``: its 64-bit hash, or the id itself."""
    fn = _KEY_HASH.get(dialect)
    return f"{fn}({column})" if fn else column


@dataclass(frozen=True, eq=False)
class LogView:
    """A prediction log the engine scans where it is stored (Parquet files); it is never loaded.

    Every whole-log computation of a diagnosis over a view is a query of the engine, so a
    week of a hundred million requests needs the memory of its per-window summaries only.
    Build one with :func:`store_case` (or :func:`diagnose_store`).

    Attributes
    ----------
    files
        The log's Parquet files (hive partitions such as ``model=``/``date=`` are read from the path).
    schema
        The columns a diagnosis sees, in order, with ``label`` when labels are joined.
    num_rows
        Rows in the view.
    where
        A SQL condition on the files' rows (alias ``l``), e.g. the ``--since``/``--until`` range.
    label_files
        Label files (``request_id``, ``label``, ``label_ts``, ``ingested_at``), joined by request id.
    label_sql
        The SQL of the diagnosed ``label`` from the joined latest ``b.label`` (e.g. text labels
        mapped to 1/0).
    label_order
        The order that puts a request's latest label first.
    labels_unique
        Whether every request id appears once in the label files (then no query de-duplicates them).
    text_columns
        Columns read as text (the reference stores them as text).
    """

    files: tuple[str, ...]
    schema: pa.Schema
    num_rows: int
    where: str = ""
    label_files: tuple[str, ...] = ()
    label_sql: str = "b.label"
    label_order: str = "label_ts DESC NULLS LAST, ingested_at DESC"
    labels_unique: bool = False
    text_columns: tuple[str, ...] = ()

    @property
    def column_names(self) -> list[str]:
        """The columns, as :attr:`pyarrow.Table.column_names`."""
        return list(self.schema.names)

    def _select(self) -> str:
        out = []
        for c in self.schema.names:
            if c == "label":
                continue
            q = quote_ident(c)
            out.append(f"CAST(l.{q} AS VARCHAR) AS {q}" if c in self.text_columns else f"l.{q}")
        return ", ".join(out)

    def bind(self, engine: Engine) -> Engine:
        """Bind the view as ``log`` on ``engine``; returns the engine to query it through.

        With labels, ``log`` joins each request's latest label. Queries that do not read the label
        are sent to the log without the join (the join is the costly part of a scan), through the
        returned wrapper; without labels the engine itself is returned.
        """
        engine.register(_LOG_FILES, list(self.files))
        cond = f" WHERE {self.where}" if self.where else ""
        sel = self._select()
        engine.query(f"CREATE OR REPLACE TEMP VIEW {_PLAIN_LOG} AS SELECT {sel} FROM {_LOG_FILES} AS l{cond}")
        if not self.label_files:
            engine.query(f"CREATE OR REPLACE TEMP VIEW log AS SELECT * FROM {_PLAIN_LOG}")
            return engine
        engine.register(_LABEL_FILES, list(self.label_files))
        key = label_key(engine.dialect, "request_id")
        latest = _UNIQUE_LABELS.format(key=key) if self.labels_unique \
            else _LATEST_LABELS.format(key=key, order=self.label_order)
        engine.query(f"CREATE OR REPLACE TEMP VIEW log AS SELECT {sel}, {self.label_sql} AS label "
                     f"FROM {_LOG_FILES} AS l LEFT JOIN ({latest}) AS b "
                     f"ON {label_key(engine.dialect, 'l.request_id')} = b.k{cond}")
        return LabelJoinEngine(engine)


#: A query reads the label when it names it or selects every column (the fallback when it does not parse).
_NEEDS_LABEL = re.compile(r"\blabel\b|SELECT\s+(?:DISTINCT\s+)?(?:\w+\.)?\*|,\s*(?:\w+\.)?\*\s*(?:,|FROM\b)",
                          re.IGNORECASE)
#: ``FROM log`` / ``JOIN log`` outside quotes; a quoted name or text (first alternative) is kept as it is.
_FROM_LOG = re.compile(r"(\"(?:[^\"]|\"\")*\"|'(?:[^']|'')*')|\b(FROM|JOIN)\s+log\b(?![.\w])", re.IGNORECASE)


def reads_label(sql: str) -> bool:
    """Whether a query's result can depend on ``log.label``.

    It does when it names a ``label`` column, or when a ``*`` reaches its result: a ``*`` in a
    subquery or CTE whose columns the outer query names (``SELECT w, count(*) FROM (SELECT *, ...
    FROM log)``) does not carry the label out, so such a query skips the join.
    """
    import sqlglot
    import sqlglot.errors
    from sqlglot import exp

    try:
        trees = [t for t in sqlglot.parse(sql, read="duckdb") if t is not None]
    except (sqlglot.errors.ParseError, sqlglot.errors.TokenError):
        return _NEEDS_LABEL.search(sql) is not None
    for tree in trees:
        for col in tree.find_all(exp.Column):
            if col.name.lower() == "label":
                return True
        for sel in tree.find_all(exp.Select):
            if not any(isinstance(e, exp.Star) or (isinstance(e, exp.Column) and isinstance(e.this, exp.Star))
                       for e in sel.expressions):
                continue
            # A star reaches the result unless the select is a subquery or a CTE read by name.
            node = sel.parent
            hidden = False
            while node is not None:
                if isinstance(node, exp.Subquery | exp.CTE):
                    hidden = True
                    break
                node = node.parent
            if not hidden:
                return True
    return False


class LabelJoinEngine:
    """An engine wrapper that runs queries not reading ``label`` on the log without the label join.

    The rows are the same either way (each request has at most one latest label), so only the
    cost changes: a hundred-million-row join is paid by the few queries that need labels.
    """

    def __init__(self, inner: Engine) -> None:
        self._inner = inner

    @property
    def dialect(self) -> str:
        """The wrapped engine's dialect."""
        return self._inner.dialect

    @property
    def inner(self) -> Engine:
        """The wrapped engine."""
        return self._inner

    @property
    def join_columns(self) -> tuple[str, ...]:
        """Columns of ``log`` that cost the join (``window_summary`` reads them in a scan of their own)."""
        return ("label",)

    def query(self, sql: str) -> pa.Table:
        """Run ``sql``; without a reference to ``label``, ``log`` is read without the join."""
        if not reads_label(sql):
            sql = _FROM_LOG.sub(lambda m: m.group(1) or f"{m.group(2)} {_PLAIN_LOG}", sql)
        return self._inner.query(sql)

    def register(self, name: str, source: Source) -> None:
        """Bind a name on the wrapped engine."""
        self._inner.register(name, source)

    def close(self) -> None:
        """Close the wrapped engine."""
        self._inner.close()


def _unified_schema(files: Sequence[str], what: str) -> pa.Schema:
    try:
        return pa.unify_schemas([pq.read_schema(f) for f in files], promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as e:
        raise InputError(f"cannot read the stored {what} files' schemas: {e}", path=files[0]) from e


def ts_sql(value: datetime) -> str:
    """A UTC timestamp literal that DuckDB reads and sqlglot carries to Spark."""
    return f"TIMESTAMPTZ {quote_literal(value.astimezone(UTC).isoformat())}"


def store_case(
    store: Store,
    *,
    model_name: str | None = None,
    engine: Engine | None = None,
    reference: str | Path | TableLike | None = None,
    model: str | Path | ScoreFn | None = None,
    config: ModelConfig | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> tuple[CaseInput, Engine]:
    """What a store holds for one model, as a case whose log stays on disk (a :class:`LogView`).

    A :class:`~mlsleuth.store.LocalStore`'s log and label files are scanned where they lie by
    ``engine`` (the store's own by default); only small aggregates come back. Other stores (a
    :class:`~mlsleuth.store.MemoryStore`, a :class:`~mlsleuth.store.RemoteStore`) are read as tables.
    Events and lineage are the store's; the reference and the model come from the arguments.

    Returns
    -------
    tuple[CaseInput, Engine]
        The case, and the engine the diagnosis must run on (the one that counted the view).

    Raises
    ------
    InputError
        When the store holds no log rows for the selection, or several models and none was named.
    """
    from mlsleuth.store import TableKind

    cfg = config or ModelConfig()
    if not isinstance(store, LocalStore):
        table = store.read_log(model=model_name, since=since, until=until)
        labels = store.sql("SELECT request_id, label, label_ts FROM labels")
        case = load_case(table, reference=reference, labels=labels if labels.num_rows else None,
                         events=store.events(), lineage=store.lineage(), model=model, config=cfg,
                         model_name=model_name)
        return case, engine if engine is not None else DuckDBEngine()
    eng = engine if engine is not None else store.engine
    root = store.path
    models = sorted(urllib.parse.unquote(p.name[len("model="):]) for p in (root / "log").glob("model=*")
                    if p.is_dir())
    if model_name is None:
        if len(models) > 1:
            raise InputError(f"the store holds the logs of several models {models}: name one (--model-name)",
                             path=root)
        model_name = models[0] if models else None
    lo = None if since is None else since.astimezone(UTC).date()
    hi = None if until is None else until.astimezone(UTC).date()
    files = [str(f) for f in store._files(store._leaf_dirs(TableKind.LOG, model=model_name, lo=lo, hi=hi))]
    if not files:
        raise InputError(f"the store holds no log rows{'' if model_name is None else ' of model ' + repr(model_name)}"
                         f"{'' if since is None and until is None else ' in the --since/--until range'}; "
                         f"it has models {models}", path=root)
    stored = _unified_schema(files, "log")
    if "ts" not in stored.names:
        raise SchemaError("the stored log has no ts column", column="ts", path=root)
    # The columns a log file of the same rows would have: the partition `model` after ts, no `date`.
    fields = [f for f in stored if f.name not in ("model", "date", "label")]
    if model_name is not None or models:
        at = next((i + 1 for i, f in enumerate(fields) if f.name == "ts"), 0)
        fields.insert(at, pa.field("model", pa.string()))
    cond = []
    if since is not None:
        cond.append(f"l.ts >= {ts_sql(since)}")
    if until is not None:
        cond.append(f"l.ts < {ts_sql(until)}")
    label_files = [str(f) for f in store._files(store._leaf_dirs(TableKind.LABELS))] \
        if "request_id" in stored.names else []
    notes: list[str] = []
    view = LogView(tuple(files), pa.schema(fields), 0, " AND ".join(cond))
    if label_files:
        lab_schema = _unified_schema(label_files, "label")
        order = ("label_ts DESC NULLS LAST, " if "label_ts" in lab_schema.names else "") + (
            "ingested_at DESC" if "ingested_at" in lab_schema.names else "request_id")
        view = replace(view, schema=pa.schema([*fields, pa.field("label", lab_schema.field("label").type)]),
                       label_files=tuple(label_files), label_order=order)
    ref = None
    if reference is not None:
        ref_raw = read_table(reference)
        ref = validate(ref_raw, DataKind.REFERENCE, path=source_path(reference), roles=cfg.roles).good
        ref, _ = _drop_time_partitions(ref, ref_raw.schema.metadata)
        text_cols = []
        for name in set(ref.column_names) & set(view.schema.names):
            lt, rt = view.schema.field(name).type, ref.schema.field(name).type
            if _is_num(lt) != _is_num(rt):
                if name.startswith(("feature.", "input.")):
                    notes.append(f"{name} is {lt} in the log but {rt} in the reference")
                ref = ref.set_column(ref.column_names.index(name), name, ref.column(name).cast(pa.string()))
                text_cols.append(name)
        if text_cols:
            schema = view.schema
            for name in text_cols:
                schema = schema.set(schema.get_field_index(name), pa.field(name, pa.string()))
            view = replace(view, schema=schema, text_columns=tuple(sorted(text_cols)))
    if label_files:
        view = replace(view, labels_unique=_labels_unique(eng, label_files))
    q = view.bind(eng)
    # The rows and whether any has a label, in one scan (a join with the labels costs a scan of both).
    counts = q.query("SELECT count(*) AS n, count(label) AS k FROM log" if label_files
                     else "SELECT count(*) AS n, 0 AS k FROM log").to_pylist()[0]
    n = int(counts["n"])
    if n == 0:
        raise InputError("no log rows in the --since/--until range", path=root)
    view = replace(view, num_rows=n)
    has_labels = False
    if label_files:
        has_labels = int(counts["k"] or 0) > 0
        aligned, note = _align_view_labels(view, q, cfg.positive_class)
        if note:
            notes.append(note)
        if aligned is not view:
            view = aligned
            q = view.bind(eng)
    schema = _view_schema(view, q, cfg)
    with LocalStore.open(root) as small:  # events and lineage are tiny: read them on DuckDB whatever the engine
        events, lineage = small.events(), small.lineage()
    score_fn: ScoreFn | None = None
    if model is not None:
        if callable(model) and not isinstance(model, str | Path):
            score_fn = model
        else:
            order_cols = [c for c in (ref.column_names if ref is not None else view.column_names)
                          if c.startswith("feature.")]
            score_fn = load_model(model, order_cols)
    case = CaseInput(log=view, schema=schema, reference=ref, events=events, lineage=lineage, score_fn=score_fn,
                     config=cfg, has_labels=has_labels, notes=tuple(notes))
    return case, eng


def _labels_unique(eng: Engine, files: Sequence[str]) -> bool:
    """Whether no request id appears twice in the label files (grouped by hash: no shared hash proves it).

    A plain two-level aggregate: Spark plans ``count(DISTINCT ...)`` beside ``count(...)`` by copying rows.
    """
    eng.register(_LABEL_FILES, list(files))
    key = label_key(eng.dialect, "request_id")
    row = eng.query(f"SELECT max(c) AS m FROM (SELECT {key} AS k, count(*) AS c FROM {_LABEL_FILES} "
                    "WHERE request_id IS NOT NULL GROUP BY 1) AS g").to_pylist()[0]
    return int(row["m"] or 0) <= 1


def _view_schema(view: LogView, eng: Engine, cfg: ModelConfig) -> LogSchema:
    """Roles of the view's columns; a text metadata column with few distinct values is a segment.

    Distinct values are counted exactly only where an approximate count says there are few, so a
    high-cardinality column (a user id) never builds a hundred-million-entry hash table.
    """
    if cfg.segments is not None:
        return infer_schema(view.schema, roles=cfg.roles, segments=cfg.segments)
    base = infer_schema(view.schema, roles=cfg.roles)
    cands = [c.name for c in base.columns if c.role is Role.METADATA
             and (_is_text(view.schema.field(c.name).type) or pa.types.is_boolean(view.schema.field(c.name).type))]
    if not cands:
        return base
    approx = eng.query("SELECT " + ", ".join(f"approx_count_distinct({quote_ident(c)}) AS {quote_ident(c)}"
                                             for c in cands) + " FROM log").to_pylist()[0]
    few = [c for c in cands if int(approx[c] or 0) <= 2 * MAX_SEGMENT_CARDINALITY]
    segments = []
    if few:
        exact = eng.query("SELECT " + ", ".join(f"count(DISTINCT {quote_ident(c)}) AS {quote_ident(c)}"
                                                for c in few) + " FROM log").to_pylist()[0]
        segments = [c for c in few
                    if 0 < int(exact[c]) <= MAX_SEGMENT_CARDINALITY and int(exact[c]) * 2 <= max(view.num_rows, 2)]
    return infer_schema(view.schema, roles=cfg.roles, segments=segments)


def _align_view_labels(view: LogView, eng: Engine, positive: object | None) -> tuple[LogView, str | None]:
    """:func:`_align_label_type` for a view, in SQL: text labels beside 0/1 predictions become 1/0."""
    names = view.schema.names
    if "prediction" not in names or "label" not in names:
        return view, None
    lt, pt = view.schema.field("label").type, view.schema.field("prediction").type
    if _is_num(lt) or not _is_num(pt):
        return view, None
    idx = names.index("label")
    counts = eng.query("SELECT count(label) AS n, count(TRY_CAST(label AS DOUBLE)) AS k FROM log").to_pylist()[0]
    if counts["n"] == counts["k"]:  # numbers written as text
        return replace(view, schema=view.schema.set(idx, pa.field("label", pa.float64())),
                       label_sql="TRY_CAST(b.label AS DOUBLE)"), None
    text = replace(view, schema=view.schema.set(idx, pa.field("label", pa.string())),
                   label_sql="CAST(b.label AS VARCHAR)")
    rows = eng.query("SELECT CAST(label AS VARCHAR) AS v, count(*) AS n FROM log WHERE label IS NOT NULL "
                     "GROUP BY 1 LIMIT 3").to_pylist()
    preds = {r["v"] for r in eng.query("SELECT DISTINCT prediction AS v FROM log WHERE prediction IS NOT NULL "
                                       "LIMIT 3").to_pylist()}
    if len(rows) != 2 or not preds <= {0, 1}:
        return text, None
    counts_by = {str(r["v"]): int(r["n"]) for r in rows}
    pos = str(positive) if positive is not None and str(positive) in counts_by \
        else min(counts_by, key=lambda v: counts_by[v])
    neg = next(v for v in counts_by if v != pos)
    sql_type = "DOUBLE" if pa.types.is_floating(pt) else "BIGINT"
    lit = quote_literal(pos)
    mapped_type = pt if pa.types.is_floating(pt) else pa.int64()
    mapped = replace(view, schema=view.schema.set(idx, pa.field("label", mapped_type)),
                     label_sql=f"CAST(CASE WHEN CAST(b.label AS VARCHAR) = {lit} THEN 1 WHEN b.label IS NULL THEN NULL "
                               f"ELSE 0 END AS {sql_type})")
    return mapped, (f"labels {pos!r}/{neg!r} were read as 1/0 to match the predictions ({pos!r}, the rarer, is the "
                    "positive class; set positive_class in the config to choose)")


def _is_text(t: pa.DataType) -> bool:
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t))
