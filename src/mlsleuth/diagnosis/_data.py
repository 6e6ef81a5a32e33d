"""What a diagnosis reads: the case's tables, events, lineage and model, validated once."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlsleuth.errors import InputError, SchemaError
from mlsleuth.schema import (
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

__all__ = ["CaseInput", "ScoreFn", "find_case_files", "load_case"]

#: Scores a table of ``feature.*`` columns (prefix kept) into an array of scores.
ScoreFn = Callable[[pa.Table], np.ndarray]


@dataclass(frozen=True)
class CaseInput:
    """Everything one diagnosis looks at.

    Attributes
    ----------
    log
        The prediction log, validated (``ts`` in UTC), with ``label`` joined when labels were given.
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

    log: pa.Table
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
    from mlsleuth.store import DuckDBEngine

    if "request_id" not in log.column_names:
        raise SchemaError("labels were given but the log has no request_id to join them on", column="request_id")
    latest = "arg_max(label, label_ts)" if "label_ts" in labels.column_names else "last(label)"
    keep = ", ".join(f'l."{c}"' for c in log.column_names if c != "label")
    with DuckDBEngine() as eng:
        eng.register("l", log)
        eng.register("lab", labels)
        return eng.query(f"SELECT {keep}, x.label FROM l LEFT JOIN (SELECT request_id, {latest} AS label "
                         f"FROM lab GROUP BY request_id) AS x ON l.request_id = x.request_id")


def load_case(
    log: str | Path | pa.Table,
    *,
    reference: str | Path | pa.Table | None = None,
    labels: str | Path | pa.Table | None = None,
    events: str | Path | Sequence[ChangeEvent] | None = None,
    lineage: str | Path | Lineage | None = None,
    model: str | Path | ScoreFn | None = None,
    config: ModelConfig | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> CaseInput:
    """Read and validate a case's inputs; bad rows are left out and counted.

    Raises
    ------
    InputError
        When a file is unreadable or a required column is missing (the message names which).
    """
    cfg = config or ModelConfig()
    raw = read_table(log) if not isinstance(log, pa.Table) else log
    checked = validate(raw, DataKind.LOG, path=None if isinstance(log, pa.Table) else log, roles=cfg.roles)
    table = checked.good
    if table.num_rows == 0:
        raise InputError("no usable rows in the log after validation; first reason: "
                         + (checked.rejected.column("reason")[0].as_py() if checked.n_rejected else "empty file"),
                         path=None if isinstance(log, pa.Table) else log)
    if since is not None:
        table = table.filter(pc.greater_equal(table.column("ts"), pa.scalar(since, table.schema.field("ts").type)))
    if until is not None:
        table = table.filter(pc.less(table.column("ts"), pa.scalar(until, table.schema.field("ts").type)))
    if table.num_rows == 0:
        raise InputError("no log rows in the --since/--until range")
    notes = []
    has_labels = False
    if labels is not None:
        lab_raw = read_table(labels) if not isinstance(labels, pa.Table) else labels
        lab = validate(lab_raw, DataKind.LABELS, path=None if isinstance(labels, pa.Table) else labels).good
        table = _join_labels(table, lab)
    if "label" in table.column_names:
        has_labels = (pc.sum(pc.is_valid(table.column("label")).cast(pa.int64())).as_py() or 0) > 0
        table, note = _align_label_type(table, cfg.positive_class)
        if note:
            notes.append(note)
    ref = None
    if reference is not None:
        ref_raw = read_table(reference) if not isinstance(reference, pa.Table) else reference
        ref = validate(ref_raw, DataKind.REFERENCE,
                       path=None if isinstance(reference, pa.Table) else reference, roles=cfg.roles).good
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


def numeric_columns(schema: LogSchema, table: pa.Table, roles: Sequence[Role]) -> list[str]:
    """Columns of the given roles whose type is numeric in ``table``."""
    return [c.name for c in schema.columns if c.role in roles and _is_num(table.schema.field(c.name).type)]
