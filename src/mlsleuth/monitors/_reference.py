"""Reference profiles computed once and kept in the store: ``<store>/profiles/<model>/reference.json``.

Next to the column profiles (:class:`~mlsleuth.profiles.ReferenceProfile`, versioned JSON) a small
``reference.meta.json`` keeps what the label-aware monitors need from the training data: the score
calibration (for the label-free performance estimate) and the reference's own performance. A new
reference never overwrites the old one silently: the previous files move to ``history/``.
"""

from __future__ import annotations

import json
import math
import shutil
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlsleuth.errors import InputError, ReadError, StoreError
from mlsleuth.profiles import ReferenceProfile, profile_like, profile_reference
from mlsleuth.schema import infer_schema, read_table
from mlsleuth.schema._tables import source_path
from mlsleuth.stats import Calibrator, auc, classification_metrics, ece, log_loss, mae, rmse

__all__ = ["META_VERSION", "StoredReference", "build_reference", "load_reference", "reference_dir",
           "save_reference"]

#: Version of the ``reference.meta.json`` layout.
META_VERSION = 1
_SKIP = frozenset({"request_id", "ts", "model", "date", "label_ts"})


@dataclass(frozen=True, eq=False)
class StoredReference:
    """A reference profile plus what label-aware monitors learn from the training data.

    Attributes
    ----------
    profile
        Column profiles of the reference data.
    knots, rates
        The score calibration (:class:`~mlsleuth.stats.Calibrator`'s ``knots_``/``rates_``), empty when the
        reference had no ``score`` and 0/1 ``label``.
    metrics
        The reference's performance (``accuracy``, ``precision``, ``recall``, ``false_positive_rate``,
        ``roc_auc``, ``calibration_error``, ``log_loss``; ``mae``/``rmse`` for regression).
    threshold
        The decision threshold inferred from the reference's ``score`` and ``prediction`` (``nan`` if unknown).
    segments
        Per segment column and value, the profile of the reference rows of that segment on the same
        edges and vocabularies, so that a segment is compared with its own training distribution.
    """

    profile: ReferenceProfile
    knots: tuple[float, ...] = ()
    rates: tuple[float, ...] = ()
    metrics: Mapping[str, float] = field(default_factory=dict)
    threshold: float = math.nan
    segments: Mapping[str, Mapping[str, ReferenceProfile]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "metrics", types.MappingProxyType(dict(self.metrics)))
        object.__setattr__(self, "segments", types.MappingProxyType(
            {k: types.MappingProxyType(dict(v)) for k, v in self.segments.items()}))

    def for_segment(self, segment: Sequence[tuple[str, str]]) -> ReferenceProfile | None:
        """The reference profile of a segment (``()``: all rows); ``None`` when the reference lacks it."""
        if not segment:
            return self.profile
        if len(segment) != 1:
            return None
        col, value = segment[0]
        return self.segments.get(col, {}).get(value)

    def segments_json(self) -> str:
        """The ``reference.segments.json`` text."""
        return json.dumps({col: {v: json.loads(p.to_json()) for v, p in vals.items()}
                           for col, vals in self.segments.items()})

    @property
    def calibrator(self) -> Calibrator | None:
        """The fitted calibrator, or ``None`` when the reference had no labelled scores."""
        if not self.knots:
            return None
        cal = Calibrator()
        cal.knots_ = np.asarray(self.knots)
        cal.rates_ = np.asarray(self.rates)
        cal.n_ = self.profile.rows
        return cal

    def meta_json(self) -> str:
        """The ``reference.meta.json`` text."""
        return json.dumps({
            "format_version": META_VERSION, "knots": list(self.knots), "rates": list(self.rates),
            "metrics": {k: v for k, v in self.metrics.items() if math.isfinite(v)},
            "threshold": self.threshold if math.isfinite(self.threshold) else None,
        }, indent=1)


def _numbers(table: pa.Table, name: str) -> np.ndarray:
    return np.asarray(pc.cast(table.column(name), pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)


def _is_number(t: pa.DataType) -> bool:
    return bool(pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t))


def build_reference(data: pa.Table | str | Path | Any, *, version: str = "", n_bins: int = 20,
                    top_k: int = 1000) -> StoredReference:
    """Profile reference (training) data and learn its calibration and performance.

    Parameters
    ----------
    data
        The reference rows (an Arrow table, a pandas or polars DataFrame), or a file holding them
        (any format :func:`~mlsleuth.schema.read_table` reads).
    version
        A label stored with the profile (default: the file name).
    n_bins, top_k
        Numeric quantile bins and categorical vocabulary size of the profiles.
    """
    if not isinstance(data, pa.Table):
        path = source_path(data)
        data = read_table(data)
        version = version or (path.name if path is not None else "")
    cols = [c for c in data.column_names if c not in _SKIP]
    if not cols:
        raise InputError(f"the reference has no columns to profile besides {sorted(_SKIP)}")
    profile = profile_reference(data.select(cols), n_bins=n_bins, top_k=top_k, version=version)
    knots: tuple[float, ...] = ()
    rates: tuple[float, ...] = ()
    metrics: dict[str, float] = {}
    threshold = math.nan
    names = data.column_names
    if "label" in names and _is_number(data.schema.field("label").type):
        y = _numbers(data, "label")
        binary = bool(np.all(np.isin(y[~np.isnan(y)], (0.0, 1.0))))
        if "score" in names and _is_number(data.schema.field("score").type) and binary:
            s = _numbers(data, "score")
            ok = ~np.isnan(s) & ~np.isnan(y)
            if ok.sum() >= 50 and 0 < y[ok].sum() < ok.sum():
                cal = Calibrator().fit(s[ok], y[ok])
                knots, rates = tuple(cal.knots_.tolist()), tuple(cal.rates_.tolist())
                metrics["roc_auc"] = auc(s[ok], y[ok]).value
                if np.all((s[ok] >= 0) & (s[ok] <= 1)):
                    metrics["calibration_error"] = ece(s[ok], y[ok])
                    metrics["log_loss"] = log_loss(s[ok], y[ok])
        if "prediction" in names and _is_number(data.schema.field("prediction").type) and binary:
            p = _numbers(data, "prediction")
            ok = ~np.isnan(p) & ~np.isnan(y)
            if ok.any() and np.all(np.isin(p[ok], (0.0, 1.0))):
                m = classification_metrics(y[ok], p[ok])
                metrics.update(accuracy=m.accuracy.value, precision=m.precision.value, recall=m.recall.value,
                               false_positive_rate=m.false_positive_rate.value)
                if "score" in names and _is_number(data.schema.field("score").type):
                    s = _numbers(data, "score")
                    pos = s[(p == 1) & ~np.isnan(s)]
                    if pos.size:
                        threshold = float(pos.min())
        elif "prediction" in names and _is_number(data.schema.field("prediction").type) and not binary:
            p = _numbers(data, "prediction")
            ok = ~np.isnan(p) & ~np.isnan(y)
            if ok.any():
                metrics.update(mae=mae(y[ok], p[ok]), rmse=rmse(y[ok], p[ok]))
    return StoredReference(profile, knots, rates, metrics, threshold, _segment_profiles(data, profile, cols))


def _segment_profiles(data: pa.Table, profile: ReferenceProfile, cols: list[str],
                      max_values: int = 50) -> dict[str, dict[str, ReferenceProfile]]:
    """Profiles of each segment value's rows on the overall profile's edges and vocabularies."""
    out: dict[str, dict[str, ReferenceProfile]] = {}
    for seg in infer_schema(data.select(cols), max_segment_cardinality=max_values).segments:
        col = pc.cast(data.column(seg), pa.string())
        values = [v for v in pc.unique(col).to_pylist() if v is not None]
        out[seg] = {}
        for v in sorted(values):
            sub = data.filter(pc.equal(col, v))
            out[seg][v] = ReferenceProfile({c: profile_like(profile.columns[c], sub.column(c)) for c in cols},
                                           sub.num_rows, profile.version, profile.created_at)
    return out


def reference_dir(store: str | Path, model: str) -> Path:
    """``<store>/profiles/<model>``."""
    if not model or "/" in model or model.startswith("."):
        raise InputError(f"a model name must be non-empty without '/' or a leading '.', got {model!r}",
                         column="model")
    return Path(store) / "profiles" / model


def save_reference(store: str | Path, model: str, reference: StoredReference) -> Path:
    """Write a reference into the store, moving any previous one to ``history/``; returns its path."""
    d = reference_dir(store, model)
    main, meta = d / "reference.json", d / "reference.meta.json"
    try:
        d.mkdir(parents=True, exist_ok=True)
        if main.exists():
            hist = d / "history"
            hist.mkdir(exist_ok=True)
            n = len(list(hist.glob("reference-*.json"))) + 1
            shutil.move(main, hist / f"reference-{n:04d}.json")
            for extra in ("meta", "segments"):
                old = d / f"reference.{extra}.json"
                if old.exists():
                    shutil.move(old, hist / f"reference-{n:04d}.{extra}.json")
        tmp = d / ".reference.json.tmp"
        tmp.write_text(reference.profile.to_json(), encoding="utf-8")
        tmp.replace(main)
        meta.write_text(reference.meta_json(), encoding="utf-8")
        (d / "reference.segments.json").write_text(reference.segments_json(), encoding="utf-8")
    except OSError as exc:
        raise StoreError(f"cannot write the reference profile to {d}: {exc}") from exc
    return main


def load_reference(path: str | Path, model: str | None = None) -> StoredReference:
    """Read a stored reference.

    Parameters
    ----------
    path
        A ``reference.json`` file, or a store folder (then ``model`` picks ``profiles/<model>/reference.json``).
    model
        The model, when ``path`` is a store.
    """
    p = Path(path)
    if p.is_dir():
        if model is None:
            found = sorted((p / "profiles").glob("*/reference.json"))
            if len(found) != 1:
                raise InputError(f"{p} holds {len(found)} stored references; name the model with --model",
                                 path=p)
            p = found[0]
        else:
            p = reference_dir(p, model) / "reference.json"
    if not p.exists():
        raise ReadError("no stored reference profile; create one with `mlsleuth profile REFERENCE --model NAME`",
                        path=p)
    profile = ReferenceProfile.load(p)
    meta_path = p.with_name(p.stem + ".meta.json")
    data: dict[str, Any] = {}
    if meta_path.exists():
        try:
            data = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ReadError(f"cannot read the reference metadata: {exc}", path=meta_path) from exc
        if int(data.get("format_version", 0)) > META_VERSION:
            raise ReadError(f"reference metadata format {data.get('format_version')} is newer than this mlsleuth "
                            f"reads ({META_VERSION}); upgrade mlsleuth", path=meta_path)
    segments: dict[str, dict[str, ReferenceProfile]] = {}
    seg_path = p.with_name(p.stem + ".segments.json")
    if seg_path.exists():
        try:
            raw = json.loads(seg_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ReadError(f"cannot read the segment profiles: {exc}", path=seg_path) from exc
        segments = {col: {v: ReferenceProfile.from_json(json.dumps(body), path=seg_path) for v, body in vals.items()}
                    for col, vals in raw.items()}
    thr = data.get("threshold")
    return StoredReference(profile, tuple(data.get("knots", ())), tuple(data.get("rates", ())),
                           dict(data.get("metrics", {})), math.nan if thr is None else float(thr), segments)
