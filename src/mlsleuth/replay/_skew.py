"""Training-serving skew: recompute features from logged raw inputs and compare, per request.

The seed's check, made concrete: compute the same features for the same inputs with the training
feature code, compare with what serving logged; any discrepancy beyond floating-point tolerance is
skew. Also compares an offline feature table joined to the log on a key.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlsleuth.errors import ConfigError, SchemaError
from mlsleuth.replay._metrics import _r, ks_statistic
from mlsleuth.replay._runners import PipelineRunner, load_pipeline
from mlsleuth.replay._select import LogSource, Selection, select
from mlsleuth.schema import FEATURE_PREFIX, read_table

__all__ = ["FeatureSkew", "SkewReport", "compare_offline", "skew_check"]

#: Default tolerance: a value matches when ``|serving - expected| <= atol + rtol * |expected|``.
RTOL = 1e-6
ATOL = 1e-9


@dataclass(frozen=True)
class FeatureSkew:
    """How one feature as served differs from the same feature computed another way.

    Attributes
    ----------
    feature
        The logged column, e.g. ``feature.amount_to_avg_ratio``.
    n
        Requests compared.
    n_mismatch
        Requests whose two values differ beyond the tolerance (a value on one side only counts;
        null or NaN on both sides matches).
    max_abs_diff, mean_abs_diff
        Largest and mean ``|serving - expected|`` over requests with finite values on both sides
        (``None`` for text features).
    max_rel_diff
        Largest ``|serving - expected| / max(|serving|, |expected|)``, in [0, 2].
    examples
        Request ids (row numbers when the log has no ``request_id``) of the largest mismatches.
    ks_serving_vs_reference, ks_expected_vs_reference
        Kolmogorov-Smirnov statistic of the served values, and of the recomputed ones, against
        the reference (training) data; ``None`` without a reference or for text features. Served
        values far from the reference while recomputed ones are close point at skew; both far
        point at drift of the inputs.
    """

    feature: str
    n: int
    n_mismatch: int
    max_abs_diff: float | None = None
    max_rel_diff: float | None = None
    mean_abs_diff: float | None = None
    examples: tuple[str, ...] = ()
    ks_serving_vs_reference: float | None = None
    ks_expected_vs_reference: float | None = None

    @property
    def mismatch_rate(self) -> float:
        """Share of compared requests that mismatch."""
        return self.n_mismatch / self.n if self.n else 0.0

    @property
    def skewed(self) -> bool:
        """Whether any request mismatches."""
        return self.n_mismatch > 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "feature": self.feature, "n": self.n, "n_mismatch": self.n_mismatch,
            "mismatch_rate": _r(self.mismatch_rate), "max_abs_diff": _r(self.max_abs_diff, 9),
            "max_rel_diff": _r(self.max_rel_diff), "mean_abs_diff": _r(self.mean_abs_diff, 9),
            "examples": list(self.examples), "ks_serving_vs_reference": _r(self.ks_serving_vs_reference),
            "ks_expected_vs_reference": _r(self.ks_expected_vs_reference),
        }


@dataclass(frozen=True)
class SkewReport:
    """Per-feature comparison of served features with recomputed (or offline) ones.

    Attributes
    ----------
    n
        Requests compared.
    method
        ``recompute`` (training code on logged inputs) or ``offline`` (a joined feature table).
    rtol, atol
        The tolerance: values match when ``|serving - expected| <= atol + rtol * |expected|``.
    features
        One entry per feature on both sides, most mismatched first.
    not_recomputed
        Logged features the other side does not have.
    not_logged
        Features the other side has that the log lacks.
    """

    n: int
    method: str
    rtol: float
    atol: float
    features: tuple[FeatureSkew, ...]
    not_recomputed: tuple[str, ...] = ()
    not_logged: tuple[str, ...] = ()

    def _repr_html_(self) -> str:
        """The ``--format html`` report, shown inline by Jupyter."""
        # The renderers live in mlsleuth.report, above this module: imported only when a notebook shows it.
        from mlsleuth.report._notebook import notebook_html

        return notebook_html(self)

    @property
    def skewed(self) -> tuple[FeatureSkew, ...]:
        """The features with at least one mismatch, most mismatched first."""
        return tuple(f for f in self.features if f.skewed)

    def __getitem__(self, feature: str) -> FeatureSkew:
        name = feature if feature.startswith(FEATURE_PREFIX) else FEATURE_PREFIX + feature
        for f in self.features:
            if f.feature == name:
                return f
        raise KeyError(f"{feature!r} was not compared; compared: {[f.feature for f in self.features]}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "n": self.n, "method": self.method, "rtol": self.rtol, "atol": self.atol,
            "skewed": [f.feature for f in self.skewed],
            "features": [f.to_dict() for f in self.features],
            "not_recomputed": list(self.not_recomputed), "not_logged": list(self.not_logged),
        }


def _is_numeric(t: pa.DataType) -> bool:
    return bool(pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)
                or pa.types.is_boolean(t))


def _floats(col: pa.ChunkedArray | pa.Array) -> np.ndarray[Any, np.dtype[np.float64]]:
    return np.asarray(pc.fill_null(col.cast(pa.float64()), np.nan).to_numpy(zero_copy_only=False), dtype=np.float64)


def row_ids(table: pa.Table) -> pa.Array:
    """Request ids as strings, or 1-based row numbers when there is no ``request_id``."""
    if "request_id" in table.column_names:
        return table.column("request_id").cast(pa.string()).combine_chunks()
    return pa.array(np.arange(1, table.num_rows + 1)).cast(pa.string())


def compare_columns(feature: str, serving: pa.ChunkedArray, expected: pa.ChunkedArray,
                    ids: pa.Array, *, rtol: float = RTOL, atol: float = ATOL,
                    n_examples: int = 5, reference: pa.ChunkedArray | None = None) -> FeatureSkew:
    """Compare two aligned columns value by value (see :class:`FeatureSkew`)."""
    n = len(serving)
    if _is_numeric(serving.type) and _is_numeric(expected.type):
        s, t = _floats(serving), _floats(expected)
        s_nan, t_nan = np.isnan(s), np.isnan(t)
        both = ~s_nan & ~t_nan
        with np.errstate(invalid="ignore", over="ignore"):
            diff = np.abs(s - t)
            same_inf = both & (s == t)
            close = same_inf | (diff <= atol + rtol * np.abs(t))
        mismatch = (s_nan ^ t_nan) | (both & ~close)
        finite = both & np.isfinite(diff)
        d = diff[finite]
        with np.errstate(invalid="ignore", divide="ignore"):
            den = np.maximum(np.abs(s[finite]), np.abs(t[finite]))
            rel = np.where(den > 0, d / np.where(den > 0, den, 1.0), 0.0)
        order_key = np.where(mismatch, np.where(finite, diff, np.inf), -1.0)
        max_abs = float(d.max()) if d.size else None
        max_rel = float(rel.max()) if rel.size else None
        mean_abs = float(d.mean()) if d.size else None
        ks_s = ks_e = None
        if reference is not None and _is_numeric(reference.type):
            ref = _floats(reference)
            got = ks_statistic(ref, s)
            ks_s = None if got is None else got[0]
            got = ks_statistic(ref, t)
            ks_e = None if got is None else got[0]
    else:
        sa, ta = serving.cast(pa.string()), expected.cast(pa.string())
        eq = pc.fill_null(pc.equal(sa, ta), False)
        both_null = pc.and_(pc.is_null(sa), pc.is_null(ta))
        mismatch = ~np.asarray(pc.or_(eq, both_null).to_numpy(zero_copy_only=False), dtype=bool)
        order_key = mismatch.astype(np.float64) - 0.5
        max_abs = max_rel = mean_abs = ks_s = ks_e = None
    n_mis = int(mismatch.sum())
    examples: tuple[str, ...] = ()
    if n_mis and n_examples > 0:
        k = min(n_examples, n_mis)
        top = np.argpartition(-order_key, k - 1)[:k]
        top = top[np.argsort(-order_key[top], kind="stable")]
        examples = tuple(str(ids[int(i)].as_py()) for i in top)
    return FeatureSkew(feature, n, n_mis, max_abs, max_rel, mean_abs, examples, ks_s, ks_e)


def _report(method: str, logged: pa.Table, expected: pa.Table, ids: pa.Array, *,
            rtol: float, atol: float, n_examples: int, reference: pa.Table | None,
            features: Sequence[str] | None) -> SkewReport:
    served = [c for c in logged.column_names if c.startswith(FEATURE_PREFIX)]
    other = [c for c in expected.column_names if c.startswith(FEATURE_PREFIX)]
    wanted = None if features is None else {f if f.startswith(FEATURE_PREFIX) else FEATURE_PREFIX + f
                                            for f in features}
    if wanted is not None:
        unknown = sorted(wanted - set(served))
        if unknown:
            raise SchemaError(f"features {unknown} are not in the log; it has {served}", column=unknown[0])
    both = [c for c in served if c in other and (wanted is None or c in wanted)]
    out = []
    for name in both:
        ref = reference.column(name) if reference is not None and name in reference.column_names else None
        out.append(compare_columns(name, logged.column(name), expected.column(name), ids, rtol=rtol, atol=atol,
                                   n_examples=n_examples, reference=ref))
    out.sort(key=lambda f: (-f.mismatch_rate, -(f.max_rel_diff or 0.0), f.feature))
    return SkewReport(
        n=logged.num_rows, method=method, rtol=rtol, atol=atol, features=tuple(out),
        not_recomputed=tuple(c for c in served if c not in other and (wanted is None or c in wanted)),
        not_logged=tuple(c for c in other if c not in served),
    )


def skew_check(data: pa.Table | LogSource | Any, pipeline: PipelineRunner | Callable[[Any], Any] | str, *,
               selection: Selection | None = None, reference: pa.Table | None = None,
               features: Sequence[str] | None = None, rtol: float = RTOL, atol: float = ATOL,
               n_examples: int = 5) -> SkewReport:
    """Recompute features from the logged raw inputs with the training code and compare with serving.

    Parameters
    ----------
    data
        The prediction log (a table or a store); it needs the ``input.*`` columns the training code
        reads and the ``feature.*`` columns serving logged.
    pipeline
        The training feature code: a :class:`PipelineRunner`, a callable, or an entry point spec.
    selection
        Which requests (all when ``None``).
    reference
        Training data with ``feature.*`` columns, for the distribution-skew statistics.
    features
        Only these features (default: every logged feature the pipeline also produces).
    rtol, atol
        Values match when ``|serving - recomputed| <= atol + rtol * |recomputed|``.
    n_examples
        Request ids to keep per feature, largest differences first.

    Examples
    --------
    >>> import numpy as np, pyarrow as pa
    >>> log = pa.table({"request_id": ["a", "b"], "input.amount": [10.0, 100.0],
    ...                 "feature.log_amount": np.log10([10.0, 100.0])})
    >>> report = skew_check(log, lambda x: {"log_amount": np.log(x["amount"])})
    >>> report["log_amount"].n_mismatch, round(report["log_amount"].max_rel_diff, 3)
    (2, 0.566)
    """
    if rtol < 0 or atol < 0:
        raise ConfigError(f"expected rtol >= 0 and atol >= 0, got {rtol}, {atol}", column="rtol")
    runner = load_pipeline(pipeline)
    logged = select(data, selection)
    if not any(c.startswith("input.") for c in logged.column_names):
        raise SchemaError("the skew check recomputes features from the input.* columns, and the log has none; "
                          f"it has {logged.column_names}", column="input.*")
    expected = runner.run(logged)
    return _report("recompute", logged, expected, row_ids(logged), rtol=rtol, atol=atol, n_examples=n_examples,
                   reference=reference, features=features)


def compare_offline(data: pa.Table | LogSource | Any, offline: pa.Table | Any, *, on: str = "request_id",
                    offline_on: str | None = None, selection: Selection | None = None,
                    features: Sequence[str] | None = None, rtol: float = RTOL, atol: float = ATOL,
                    n_examples: int = 5) -> SkewReport:
    """Join an offline feature table to the logged requests on a key and compare feature by feature.

    Parameters
    ----------
    data
        The prediction log (a table or a store).
    offline
        One row per key, with feature columns named ``feature.<name>`` or ``<name>``.
    on
        The log's key column (e.g. ``request_id`` or ``input.customer_id``).
    offline_on
        The offline table's key column (default: ``on``, or ``on`` without its ``input.`` prefix).
    selection, features, rtol, atol, n_examples
        As for :func:`skew_check`. Requests whose key is missing offline count as mismatches.

    Raises
    ------
    SchemaError
        A key column is missing, or the offline table repeats a key.
    """
    logged = select(data, selection)
    if not isinstance(offline, pa.Table):
        offline = read_table(offline)
    if on not in logged.column_names:
        raise SchemaError(f"the log has no key column {on!r}; it has {logged.column_names}", column=on)
    key = offline_on or (on if on in offline.column_names else on.split(".", 1)[-1])
    if key not in offline.column_names:
        raise SchemaError(f"the offline table has no key column {key!r}; it has {offline.column_names}", column=key)
    n_keys = pc.count_distinct(offline.column(key), mode="all").as_py()
    if n_keys != offline.num_rows:
        raise SchemaError(f"the offline table repeats keys in {key!r} ({offline.num_rows} rows, {n_keys} keys); "
                          "keep one row per key (e.g. the snapshot that served)", column=key)
    renamed = offline.rename_columns(["_key" if c == key else (c if c.startswith(FEATURE_PREFIX)
                                                                else FEATURE_PREFIX + c) for c in offline.column_names])
    renamed = renamed.append_column("_matched", pa.array(np.ones(offline.num_rows, dtype=bool)))
    left = pa.table({"_key": logged.column(on), "_row": pa.array(np.arange(logged.num_rows))})
    key_type = left.column("_key").type
    if renamed.column("_key").type != key_type:
        try:
            renamed = renamed.set_column(renamed.column_names.index("_key"), "_key",
                                         renamed.column("_key").cast(key_type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            raise SchemaError(f"cannot match key types: log {on} is {key_type}, offline {key} is "
                              f"{offline.column(key).type}", column=key) from e
    joined = left.join(renamed, "_key", join_type="left outer", use_threads=False).sort_by("_row")
    expected = joined.drop_columns(["_key", "_row", "_matched"])
    return _report("offline", logged, expected, row_ids(logged), rtol=rtol, atol=atol, n_examples=n_examples,
                   reference=None, features=features)
