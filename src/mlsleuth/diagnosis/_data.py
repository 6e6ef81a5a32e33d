"""What a diagnosis reads: the case's tables, events, lineage and model, validated once."""

from __future__ import annotations

import re
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
    Validated,
    infer_schema,
    read_events,
    read_lineage,
    read_table,
    validate,
)
from mlsleuth.schema._tables import PARTITIONS_KEY, TIME_PARTITIONS, source_path
from mlsleuth.store import DuckDBEngine, Engine, LocalStore, Store, TableKind
from mlsleuth.store._engine import Source
from mlsleuth.store._sql_case import (
    LATEST_LABEL_ORDER,
    approx_distinct_counts,
    count_rows_and_labels,
    create_log_view,
    create_plain_log_view,
    distinct_counts,
    distinct_predictions,
    join_latest_labels,
    label_as_double,
    label_as_text,
    label_key,
    label_number_counts,
    label_order,
    label_to_binary,
    label_value_counts,
    latest_labels,
    max_labels_per_request,
    stored_labels,
    time_range,
    ts_literal,
    unique_labels,
    view_select,
)

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
    """Left-join the latest label per request_id onto the log (in the engine: a million rows join in a blink).

    The latest is the store's (:func:`~mlsleuth.store._sql_case.latest_labels`); without ``label_ts``
    or ``ingested_at``, the later row of the labels counts as the later label.
    """
    if "request_id" not in log.column_names:
        raise SchemaError("labels were given but the log has no request_id to join them on", column="request_id")
    # Only the request ids go through the join, with their row numbers: the log's other columns (a
    # wide log holds gigabytes of them) are not copied, and the labels come back in the log's order.
    ids = pa.table({"i": pa.array(np.arange(log.num_rows, dtype=np.int64)), "request_id": log.column("request_id")})
    numbered = labels.append_column(_LABEL_ROW, pa.array(np.arange(labels.num_rows, dtype=np.int64)))
    with DuckDBEngine() as eng:
        eng.register("l", ids)
        eng.register("lab", numbered)
        label = eng.query(join_latest_labels("l", "lab", label_order(labels.column_names, last=f"{_LABEL_ROW} DESC")))
    if "label" in log.column_names:
        log = log.drop_columns(["label"])
    return log.append_column("label", label.column("label"))


#: The row number of a label in its table: the later row is the later label when nothing else says.
_LABEL_ROW = "_mlsleuth_row"


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
    checked = _validated_log(raw, log, cfg, ts_format)
    table, notes = _rows_to_diagnose(checked.good, raw, source_path(log), model_name, since, until)
    notes += [f"the log's column {old!r} (no name) was read as {new!r}" for old, new in checked.renamed]
    table, has_labels, label_notes = _with_labels(table, labels, cfg, ts_format=ts_format, delimiter=delimiter)
    notes += label_notes
    ref = None
    if reference is not None:
        ref = _read_reference(reference, cfg, ts_format=ts_format, delimiter=delimiter)
        # Align types: a reference column the log stores as text, or vice versa, is compared as text.
        text, type_notes = _type_clashes(table.schema, ref)
        ref, table = _as_text(ref, text), _as_text(table, text)
        notes += type_notes
    evs: tuple[ChangeEvent, ...] = ()
    if events is not None:
        evs = read_events(events) if isinstance(events, str | Path) else tuple(events)
    lin = Lineage()
    if lineage is not None:
        lin = read_lineage(lineage) if isinstance(lineage, str | Path) else lineage
    schema = infer_schema(table, roles=cfg.roles, segments=cfg.segments)
    score_fn = _score_fn(model, ref.column_names if ref is not None else table.column_names)
    if checked.n_rejected:
        notes.append(f"{checked.n_rejected} log rows failed validation and were left out "
                     f"(first: {checked.rejected.column('reason')[0].as_py()})")
    return CaseInput(log=table, schema=schema, reference=ref, events=evs, lineage=lin, score_fn=score_fn,
                     config=cfg, has_labels=has_labels, rejected_rows=checked.n_rejected, notes=tuple(notes))


def _validated_log(raw: pa.Table, log: object, cfg: ModelConfig, ts_format: str | None) -> Validated:
    """The log's rows validated; no usable row at all stops here, with the first reason and its fix."""
    log_path = source_path(log)
    checked = validate(raw, DataKind.LOG, path=log_path, roles=cfg.roles, ts_format=ts_format)
    if checked.good.num_rows == 0:
        first = checked.rejected.column("reason")[0].as_py() if checked.n_rejected else "empty file"
        column = first.split(":", 1)[0] if first.split(":", 1)[0] in raw.column_names else None
        fix = ("; for times in another layout pass --ts-format (ts_format=), e.g. '%d/%m/%Y %H:%M'"
               if column in ("ts", "label_ts") and ts_format is None and "ISO-8601" in first else "")
        raise InputError(f"no usable rows in the log after validation; first reason: {first}{fix}", path=log_path,
                         column=column)
    return checked


def _rows_to_diagnose(table: pa.Table, raw: pa.Table, log_path: Path | None, model_name: str | None,
                      since: datetime | None, until: datetime | None) -> tuple[pa.Table, list[str]]:
    """The rows of the one model and ``[since, until)``, without time partition columns; notes on what was left."""
    table, notes = _drop_time_partitions(table, raw.schema.metadata)
    table, model_note = _one_model(table, model_name, log_path)
    if model_note:
        notes.append(model_note)
    if since is not None:
        table = table.filter(pc.greater_equal(table.column("ts"), pa.scalar(since, table.schema.field("ts").type)))
    if until is not None:
        table = table.filter(pc.less(table.column("ts"), pa.scalar(until, table.schema.field("ts").type)))
    if table.num_rows == 0:
        raise InputError("no log rows in the --since/--until range")
    return table, notes


def _with_labels(table: pa.Table, labels: str | Path | TableLike | None, cfg: ModelConfig, *,
                 ts_format: str | None, delimiter: str | None) -> tuple[pa.Table, bool, list[str]]:
    """The log with each request's latest label joined, typed as the predictions; whether any row has one."""
    notes = []
    if labels is not None:
        lab_raw = read_table(labels, delimiter=delimiter)
        lab_checked = validate(lab_raw, DataKind.LABELS, path=source_path(labels), ts_format=ts_format)
        if lab_checked.n_rejected:
            notes.append(f"{lab_checked.n_rejected:,} label rows failed validation and were left out "
                         f"(first: {lab_checked.rejected.column('reason')[0].as_py()})")
        table = _join_labels(table, lab_checked.good)
    if "label" not in table.column_names:
        return table, False, notes
    has_labels = (pc.sum(pc.is_valid(table.column("label")).cast(pa.int64())).as_py() or 0) > 0
    if labels is not None and not has_labels:
        notes.append("labels were given but none of their request_ids is in the log (after --since/--until "
                     "and --model-name): check that both files use the same ids")
    table, note = _align_label_type(table, cfg.positive_class)
    if note:
        notes.append(note)
    return table, has_labels, notes


def _read_reference(reference: str | Path | TableLike, cfg: ModelConfig, *, ts_format: str | None = None,
                    delimiter: str | None = None) -> pa.Table:
    """The reference's valid rows, without time partition columns."""
    ref_raw = read_table(reference, delimiter=delimiter)
    ref = validate(ref_raw, DataKind.REFERENCE, path=source_path(reference), roles=cfg.roles,
                   ts_format=ts_format).good
    ref, _ = _drop_time_partitions(ref, ref_raw.schema.metadata)
    return ref


def _type_clashes(log_schema: pa.Schema, ref: pa.Table) -> tuple[list[str], list[str]]:
    """Columns numeric on one side and text on the other (compared as text), and notes naming the features."""
    names, notes = [], []
    for name in set(ref.column_names) & set(log_schema.names):
        lt, rt = log_schema.field(name).type, ref.schema.field(name).type
        if _is_num(lt) != _is_num(rt):
            if name.startswith(("feature.", "input.")):
                notes.append(f"{name} is {lt} in the log but {rt} in the reference")
            names.append(name)
    return names, notes


def _as_text(table: pa.Table, names: Sequence[str]) -> pa.Table:
    for name in names:
        table = table.set_column(table.column_names.index(name), name, table.column(name).cast(pa.string()))
    return table


def _score_fn(model: str | Path | ScoreFn | None, columns: Sequence[str]) -> ScoreFn | None:
    """The model as a scoring function of the ``feature.*`` of ``columns``, in their order."""
    if model is None:
        return None
    if callable(model) and not isinstance(model, str | Path):
        return model
    return load_model(model, [c for c in columns if c.startswith("feature.")])


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
    label_order: str = LATEST_LABEL_ORDER
    labels_unique: bool = False
    text_columns: tuple[str, ...] = ()

    @property
    def column_names(self) -> list[str]:
        """The columns, as :attr:`pyarrow.Table.column_names`."""
        return list(self.schema.names)

    def bind(self, engine: Engine) -> Engine:
        """Bind the view as ``log`` on ``engine``; returns the engine to query it through.

        With labels, ``log`` joins each request's latest label. Queries that do not read the label
        are sent to the log without the join (the join is the costly part of a scan), through the
        returned wrapper; without labels the engine itself is returned.
        """
        engine.register(_LOG_FILES, list(self.files))
        sel = view_select([c for c in self.schema.names if c != "label"], self.text_columns)
        engine.query(create_plain_log_view(_PLAIN_LOG, _LOG_FILES, sel, self.where))
        if not self.label_files:
            engine.query(create_log_view(plain=_PLAIN_LOG))
            return engine
        engine.register(_LABEL_FILES, list(self.label_files))
        key = label_key(engine.dialect, "request_id")
        latest = unique_labels(_LABEL_FILES, key) if self.labels_unique \
            else latest_labels(_LABEL_FILES, order=self.label_order, columns=("request_id", "label"), key=key)
        engine.query(create_log_view(files=_LOG_FILES, select=sel, where=self.where, labels=latest,
                                     label=self.label_sql, key=label_key(engine.dialect, "l.request_id")))
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


#: A UTC timestamp literal that DuckDB reads and sqlglot carries to Spark.
ts_sql = ts_literal


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
    cfg = config or ModelConfig()
    if not isinstance(store, LocalStore):
        case = _read_store(store, model_name=model_name, reference=reference, model=model, config=cfg,
                           since=since, until=until)
        return case, engine if engine is not None else DuckDBEngine()
    eng = engine if engine is not None else store.engine
    files, model_name, models = _log_files(store, model_name, since, until)
    view = _stored_view(store, files, model_name, models, since, until)
    notes: list[str] = []
    ref = None
    if reference is not None:
        ref = _read_reference(reference, cfg)
        text, notes = _type_clashes(view.schema, ref)
        ref = _as_text(ref, text)
        view = _read_as_text(view, text)
    if view.label_files:
        view = replace(view, labels_unique=_labels_unique(eng, view.label_files))
    view, q, has_labels, note = _counted(view, eng, cfg, store.path)
    if note:
        notes.append(note)
    schema = _view_schema(view, q, cfg)
    with LocalStore.open(store.path) as small:  # events and lineage are tiny: read them on DuckDB whatever the engine
        events, lineage = small.events(), small.lineage()
    score_fn = _score_fn(model, ref.column_names if ref is not None else view.column_names)
    case = CaseInput(log=view, schema=schema, reference=ref, events=events, lineage=lineage, score_fn=score_fn,
                     config=cfg, has_labels=has_labels, notes=tuple(notes))
    return case, eng


def _read_store(store: Store, *, model_name: str | None, reference: str | Path | TableLike | None,
                model: str | Path | ScoreFn | None, config: ModelConfig, since: datetime | None,
                until: datetime | None) -> CaseInput:
    """A store that is not a folder of files: its log and latest labels read as tables."""
    table = store.read_log(model=model_name, since=since, until=until)
    labels = store.sql(stored_labels())
    return load_case(table, reference=reference, labels=labels if labels.num_rows else None, events=store.events(),
                     lineage=store.lineage(), model=model, config=config, model_name=model_name)


def _log_files(store: LocalStore, model_name: str | None, since: datetime | None,
               until: datetime | None) -> tuple[list[str], str | None, list[str]]:
    """The log files of the model (the store's only one when not named) and days; the model; all models."""
    models = store.log_models()
    if model_name is None:
        if len(models) > 1:
            raise InputError(f"the store holds the logs of several models {models}: name one (--model-name)",
                             path=store.path)
        model_name = models[0] if models else None
    lo = None if since is None else since.astimezone(UTC).date()
    hi = None if until is None else until.astimezone(UTC).date()
    files = [str(f) for f in store.files(TableKind.LOG, model=model_name, lo=lo, hi=hi)]
    if not files:
        raise InputError(f"the store holds no log rows{'' if model_name is None else ' of model ' + repr(model_name)}"
                         f"{'' if since is None and until is None else ' in the --since/--until range'}; "
                         f"it has models {models}", path=store.path)
    return files, model_name, models


def _stored_view(store: LocalStore, files: Sequence[str], model_name: str | None, models: Sequence[str],
                 since: datetime | None, until: datetime | None) -> LogView:
    """The log files (and the store's label files) as a view with the columns a log file of the same rows has."""
    stored = _unified_schema(files, "log")
    if "ts" not in stored.names:
        raise SchemaError("the stored log has no ts column", column="ts", path=store.path)
    # The columns a log file of the same rows would have: the partition `model` after ts, no `date`.
    fields = [f for f in stored if f.name not in ("model", "date", "label")]
    if model_name is not None or models:
        at = next((i + 1 for i, f in enumerate(fields) if f.name == "ts"), 0)
        fields.insert(at, pa.field("model", pa.string()))
    view = LogView(tuple(files), pa.schema(fields), 0, time_range("l.ts", since, until))
    label_files = [str(f) for f in store.files(TableKind.LABELS)] if "request_id" in stored.names else []
    if not label_files:
        return view
    lab_schema = _unified_schema(label_files, "label")
    return replace(view, schema=pa.schema([*fields, pa.field("label", lab_schema.field("label").type)]),
                   label_files=tuple(label_files), label_order=label_order(lab_schema.names))


def _read_as_text(view: LogView, names: Sequence[str]) -> LogView:
    """The view with ``names`` read as text (the reference stores them as text)."""
    if not names:
        return view
    schema = view.schema
    for name in names:
        schema = schema.set(schema.get_field_index(name), pa.field(name, pa.string()))
    return replace(view, schema=schema, text_columns=tuple(sorted(names)))


def _counted(view: LogView, eng: Engine, cfg: ModelConfig,
             root: Path) -> tuple[LogView, Engine, bool, str | None]:
    """The view with its rows counted and its labels typed as the predictions, bound on ``eng``.

    Returns the view, the engine to query it through, whether any row has a label, and a note on
    how the labels were read.
    """
    q = view.bind(eng)
    # The rows and whether any has a label, in one scan (a join with the labels costs a scan of both).
    counts = q.query(count_rows_and_labels(labelled=bool(view.label_files))).to_pylist()[0]
    n = int(counts["n"])
    if n == 0:
        raise InputError("no log rows in the --since/--until range", path=root)
    view = replace(view, num_rows=n)
    if not view.label_files:
        return view, q, False, None
    aligned, note = _align_view_labels(view, q, cfg.positive_class)
    if aligned is not view:
        view = aligned
        q = view.bind(eng)
    return view, q, int(counts["k"] or 0) > 0, note


def _labels_unique(eng: Engine, files: Sequence[str]) -> bool:
    """Whether no request id appears twice in the label files (grouped by hash: no shared hash proves it)."""
    eng.register(_LABEL_FILES, list(files))
    row = eng.query(max_labels_per_request(_LABEL_FILES, label_key(eng.dialect, "request_id"))).to_pylist()[0]
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
    approx = eng.query(approx_distinct_counts(cands)).to_pylist()[0]
    few = [c for c in cands if int(approx[c] or 0) <= 2 * MAX_SEGMENT_CARDINALITY]
    segments = []
    if few:
        exact = eng.query(distinct_counts(few)).to_pylist()[0]
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
    counts = eng.query(label_number_counts()).to_pylist()[0]
    if counts["n"] == counts["k"]:  # numbers written as text
        return replace(view, schema=view.schema.set(idx, pa.field("label", pa.float64())),
                       label_sql=label_as_double()), None
    text = replace(view, schema=view.schema.set(idx, pa.field("label", pa.string())), label_sql=label_as_text())
    rows = eng.query(label_value_counts(3)).to_pylist()
    preds = {r["v"] for r in eng.query(distinct_predictions(3)).to_pylist()}
    if len(rows) != 2 or not preds <= {0, 1}:
        return text, None
    counts_by = {str(r["v"]): int(r["n"]) for r in rows}
    pos = str(positive) if positive is not None and str(positive) in counts_by \
        else min(counts_by, key=lambda v: counts_by[v])
    neg = next(v for v in counts_by if v != pos)
    mapped_type = pt if pa.types.is_floating(pt) else pa.int64()
    mapped = replace(view, schema=view.schema.set(idx, pa.field("label", mapped_type)),
                     label_sql=label_to_binary(pos, "DOUBLE" if pa.types.is_floating(pt) else "BIGINT"))
    return mapped, (f"labels {pos!r}/{neg!r} were read as 1/0 to match the predictions ({pos!r}, the rarer, is the "
                    "positive class; set positive_class in the config to choose)")


def _is_text(t: pa.DataType) -> bool:
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t))
