"""Model and feature-pipeline runners behind one protocol, and loading them from a spec string.

A *model runner* turns a table of ``feature.*`` columns into one score per row; a *pipeline
runner* turns a table of ``input.*`` columns into ``feature.*`` columns. Every runner batches
internally, so callers hand over a whole window of requests at once. pandas appears only here, at
the edge where a user's estimator or function expects a DataFrame (docs/contract.md, "Model").
"""

from __future__ import annotations

import enum
import importlib
import importlib.util
import inspect
import json
import re
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from mlsleuth.errors import ConfigError, ReadError, RunnerError, SchemaError
from mlsleuth.schema import FEATURE_PREFIX, INPUT_PREFIX

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "EstimatorRunner",
    "Frame",
    "FunctionRunner",
    "HttpRunner",
    "MemoryRunner",
    "PipelineRunner",
    "Runner",
    "load_pipeline",
    "load_runner",
]

FloatArray = npt.NDArray[np.float64]

#: Rows per call into a Python estimator or function: large enough that per-call overhead vanishes,
#: small enough that a batch's DataFrame stays in cache-friendly sizes.
DEFAULT_BATCH_SIZE = 65_536

_MODEL_SUFFIXES = (".joblib", ".pkl", ".pickle")
_ENTRY_POINT = re.compile(r"^(?P<module>[A-Za-z_][\w.]*|.+\.py):(?P<attr>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)$")


@runtime_checkable
class Runner(Protocol):
    """Anything that scores a batch of requests.

    ``run`` takes a table holding the ``feature.*`` columns of the requests (other columns are
    ignored by the built-in runners) and returns one float score per row, in row order.
    """

    def run(self, features: pa.Table) -> FloatArray:
        """Score every row of ``features``."""
        ...


class Frame(enum.Enum):
    """The data structure a user's Python function receives.

    ``AUTO`` reads the annotation of the function's first parameter: ``pyarrow.Table`` gives
    ``ARROW``, a ``Mapping``/``dict`` gives ``NUMPY`` (a dict of column name to numpy array),
    anything else (or none) gives ``PANDAS``, the contract's default.
    """

    AUTO = "auto"
    PANDAS = "pandas"
    ARROW = "arrow"
    NUMPY = "numpy"


def _resolve_frame(fn: Callable[..., Any], frame: Frame) -> Frame:
    if frame is not Frame.AUTO:
        return frame
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return Frame.PANDAS
    if not params:
        return Frame.PANDAS
    ann = params[0].annotation
    text = ann if isinstance(ann, str) else getattr(ann, "__qualname__", "") or str(ann)
    module = "" if isinstance(ann, str) else getattr(ann, "__module__", "")
    if text in ("pa.Table", "pyarrow.Table", "Table") and (isinstance(ann, str) or module.startswith("pyarrow")):
        return Frame.ARROW
    if re.match(r"^(typing\.|collections\.abc\.)?(Mapping|dict|Dict|MutableMapping)\b", text) or ann is dict:
        return Frame.NUMPY
    return Frame.PANDAS


def _strip(table: pa.Table, prefix: str, order: Sequence[str] | None, *, what: str) -> pa.Table:
    """The columns named ``prefix + name`` with the prefix removed, in ``order`` when given.

    Without ``order``: the prefixed columns in table order, or every column when none carries the
    prefix (the caller already passed bare names).
    """
    names = table.column_names
    if order is not None:
        cols = []
        bare = []
        for name in order:
            short = name[len(prefix):] if name.startswith(prefix) else name
            if prefix + short in names:
                cols.append(table.column(prefix + short))
            elif short in names:
                cols.append(table.column(short))
            else:
                have = [n for n in names if n.startswith(prefix)] or names
                raise SchemaError(f"the {what} needs {prefix}{short}, which the requests lack; they have {have}",
                                  column=prefix + short)
            bare.append(short)
        return pa.table(cols, names=bare)
    chosen = [n for n in names if n.startswith(prefix)]
    if not chosen:
        return table
    return pa.table([table.column(n) for n in chosen], names=[n[len(prefix):] for n in chosen])


def _to_frame(table: pa.Table, frame: Frame) -> Any:
    if frame is Frame.ARROW:
        return table
    if frame is Frame.NUMPY:
        return {name: table.column(name).to_numpy() for name in table.column_names}
    return table.to_pandas()


def _batches(n: int, size: int | None) -> list[tuple[int, int]]:
    if n == 0:
        return []
    if size is None or size <= 0 or n <= size:
        return [(0, n)]
    return [(i, min(size, n - i)) for i in range(0, n, size)]


def _as_scores(out: Any, n: int, runner: str) -> FloatArray:
    """Turn what a model returned into one float per row."""
    if hasattr(out, "to_numpy"):
        out = out.to_numpy()
    try:
        arr = np.asarray(out, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise RunnerError(f"expected numeric scores, got values such as {np.asarray(out).ravel()[:3]!r}; "
                          "return probabilities or wrap the model in an entry point that does", runner=runner) from e
    if arr.ndim == 2:
        if arr.shape[1] == 1:
            arr = arr[:, 0]
        elif arr.shape[1] == 2:
            arr = arr[:, 1]
        else:
            raise RunnerError(f"expected one score per row or two-class probabilities, got shape {arr.shape}; "
                              "wrap a multi-class model in an entry point returning one score", runner=runner)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise RunnerError(f"expected {n} scores (one per row), got an array of shape {arr.shape}", runner=runner)
    return arr


def _name_of(obj: Any) -> str:
    return getattr(obj, "__qualname__", None) or type(obj).__name__


class EstimatorRunner:
    """A scikit-learn-compatible estimator: anything with ``predict_proba`` or ``predict``.

    LightGBM, XGBoost and CatBoost models work through their scikit-learn APIs; nothing here imports
    them. The estimator receives a pandas DataFrame of the feature columns with the ``feature.``
    prefix removed, in ``feature_order`` (default: the estimator's ``feature_names_in_``, else the
    table's order); an estimator fitted on a bare array (no ``feature_names_in_``) receives the
    same values as a numpy array, which avoids scikit-learn's feature-name warning.

    Parameters
    ----------
    estimator
        The fitted model.
    feature_order
        Feature names (with or without the prefix) in the order the model expects.
    batch_size
        Rows per call to the model.
    positive_class
        For ``predict_proba``: the class whose probability is the score (default: the last class).

    Examples
    --------
    >>> import numpy as np, pyarrow as pa
    >>> from sklearn.linear_model import LogisticRegression
    >>> m = LogisticRegression().fit(np.array([[0.0], [1.0], [2.0], [3.0]]), [0, 0, 1, 1])
    >>> EstimatorRunner(m).run(pa.table({"feature.x": [0.0, 3.0]})).round(1)
    array([0.2, 0.8])
    """

    def __init__(self, estimator: Any, *, feature_order: Sequence[str] | None = None,
                 batch_size: int | None = DEFAULT_BATCH_SIZE, positive_class: Any = None) -> None:
        if not (hasattr(estimator, "predict_proba") or hasattr(estimator, "predict")):
            raise ConfigError(f"expected an estimator with predict_proba or predict, got {type(estimator).__name__}")
        self.estimator = estimator
        names = getattr(estimator, "feature_names_in_", None)
        self.feature_order = (tuple(feature_order) if feature_order is not None
                              else tuple(str(n) for n in names) if names is not None else None)
        self.batch_size = batch_size
        self.positive_class = positive_class
        self._as_array = names is None and hasattr(estimator, "n_features_in_")
        self._column: int | None = None
        classes = getattr(estimator, "classes_", None)
        if positive_class is not None and classes is not None:
            hits = [i for i, c in enumerate(classes) if c == positive_class]
            if not hits:
                raise ConfigError(f"positive_class {positive_class!r} is not among the model's classes "
                                  f"{list(classes)}", column="positive_class")
            self._column = hits[0]
        self.name = type(estimator).__name__

    def __repr__(self) -> str:
        return f"EstimatorRunner({self.name})"

    def run(self, features: pa.Table) -> FloatArray:
        """Score every row, ``batch_size`` rows per call to the estimator."""
        table = _strip(features, FEATURE_PREFIX, self.feature_order, what=f"model {self.name}")
        n = table.num_rows
        out = np.empty(n, dtype=np.float64)
        for start, length in _batches(n, self.batch_size):
            out[start:start + length] = self._score(table.slice(start, length))
        return out

    def _score(self, batch: pa.Table) -> FloatArray:
        frame = batch.to_pandas()
        x: Any = frame.to_numpy() if self._as_array else frame
        try:
            if hasattr(self.estimator, "predict_proba"):
                proba = np.asarray(self.estimator.predict_proba(x), dtype=np.float64)
                if proba.ndim == 2 and self._column is not None:
                    return np.ascontiguousarray(proba[:, self._column])
                if proba.ndim == 2 and proba.shape[1] > 2 and self._column is None:
                    raise RunnerError(f"predict_proba returned {proba.shape[1]} classes; pass positive_class= "
                                      "to choose the class whose probability is the score", runner=self.name)
                if proba.ndim == 2 and proba.shape[1] == 2:
                    return np.ascontiguousarray(proba[:, 1])
                return _as_scores(proba, batch.num_rows, self.name)
            return _as_scores(self.estimator.predict(x), batch.num_rows, self.name)
        except RunnerError:
            raise
        except Exception as e:  # the user's model: translate whatever it raises
            raise RunnerError(f"the model failed on a batch of {batch.num_rows} rows with columns "
                              f"{batch.column_names}: {type(e).__name__}: {e}", runner=self.name) from e


class FunctionRunner:
    """A Python function (an entry point ``package.module:function``) that returns scores.

    The function receives the feature columns with the ``feature.`` prefix removed, as a pandas
    DataFrame by default (see :class:`Frame`), and returns one score per row (a sequence, an array,
    a Series, or two-class probabilities).

    Examples
    --------
    >>> import pyarrow as pa
    >>> def model(x: pa.Table) -> list[float]:
    ...     return [v / 10 for v in x.column("amount").to_pylist()]
    >>> FunctionRunner(model).run(pa.table({"feature.amount": [1.0, 5.0]}))
    array([0.1, 0.5])
    """

    def __init__(self, fn: Callable[[Any], Any], *, feature_order: Sequence[str] | None = None,
                 batch_size: int | None = DEFAULT_BATCH_SIZE, frame: Frame = Frame.AUTO,
                 name: str | None = None) -> None:
        if not callable(fn):
            raise ConfigError(f"expected a callable, got {type(fn).__name__}")
        self.fn = fn
        self.feature_order = None if feature_order is None else tuple(feature_order)
        self.batch_size = batch_size
        self.frame = _resolve_frame(fn, frame)
        self.name = name or _name_of(fn)

    def __repr__(self) -> str:
        return f"FunctionRunner({self.name})"

    def run(self, features: pa.Table) -> FloatArray:
        """Score every row, ``batch_size`` rows per call to the function."""
        table = _strip(features, FEATURE_PREFIX, self.feature_order, what=f"function {self.name}")
        n = table.num_rows
        out = np.empty(n, dtype=np.float64)
        for start, length in _batches(n, self.batch_size):
            batch = table.slice(start, length)
            try:
                result = self.fn(_to_frame(batch, self.frame))
            except Exception as e:  # the user's code
                raise RunnerError(f"the function failed on a batch of {length} rows with columns "
                                  f"{batch.column_names}: {type(e).__name__}: {e}", runner=self.name) from e
            out[start:start + length] = _as_scores(result, length, self.name)
        return out


class MemoryRunner:
    """An in-memory runner for tests: an Arrow-level callable, with call counts.

    ``fn`` receives each batch as the table it was given (prefixes kept) and returns one score per
    row. ``calls`` and ``rows`` count what it was asked to score.

    Examples
    --------
    >>> import pyarrow as pa, pyarrow.compute as pc
    >>> r = MemoryRunner(lambda t: pc.multiply(t["feature.x"], 2.0))
    >>> r.run(pa.table({"feature.x": [0.1, 0.2]})), r.calls
    (array([0.2, 0.4]), 1)
    """

    def __init__(self, fn: Callable[[pa.Table], Any], *, batch_size: int | None = None,
                 name: str = "memory") -> None:
        self.fn = fn
        self.batch_size = batch_size
        self.name = name
        self.calls = 0
        self.rows = 0

    def __repr__(self) -> str:
        return f"MemoryRunner({self.name})"

    def run(self, features: pa.Table) -> FloatArray:
        """Score every row with ``fn``, ``batch_size`` rows at a time."""
        n = features.num_rows
        out = np.empty(n, dtype=np.float64)
        for start, length in _batches(n, self.batch_size):
            self.calls += 1
            self.rows += length
            result = self.fn(features.slice(start, length))
            if isinstance(result, pa.ChunkedArray | pa.Array):
                result = result.to_numpy()
            out[start:start + length] = _as_scores(result, length, self.name)
        return out


class PipelineRunner:
    """A feature pipeline: raw ``input.*`` columns in, ``feature.*`` columns out.

    The function receives the input columns with the ``input.`` prefix removed (as a DataFrame,
    an Arrow table or a dict of numpy arrays, see :class:`Frame`) and returns the features as a
    table, a DataFrame or a mapping of name to values, one row per input row; names without the
    ``feature.`` prefix get it. With ``keep_prefix=True`` the function receives the ``input.*``
    names as logged (for feature code written against the log's column names).

    Examples
    --------
    >>> import numpy as np, pyarrow as pa
    >>> def features(x: dict) -> dict:
    ...     return {"log_amount": np.log(x["amount"])}
    >>> PipelineRunner(features).run(pa.table({"input.amount": [1.0]})).to_pydict()
    {'feature.log_amount': [0.0]}
    """

    def __init__(self, fn: Callable[[Any], Any], *, batch_size: int | None = DEFAULT_BATCH_SIZE,
                 frame: Frame = Frame.AUTO, keep_prefix: bool = False, name: str | None = None) -> None:
        if not callable(fn):
            raise ConfigError(f"expected a callable feature pipeline, got {type(fn).__name__}")
        self.fn = fn
        self.keep_prefix = keep_prefix
        self.batch_size = batch_size
        self.frame = _resolve_frame(fn, frame)
        self.name = name or _name_of(fn)

    def __repr__(self) -> str:
        return f"PipelineRunner({self.name})"

    def run(self, inputs: pa.Table) -> pa.Table:
        """Compute the features of every row; returns a table of ``feature.*`` columns."""
        table = _strip(inputs, INPUT_PREFIX, None, what=f"pipeline {self.name}")
        if self.keep_prefix:
            table = table.rename_columns([c if c.startswith(INPUT_PREFIX) else INPUT_PREFIX + c
                                          for c in table.column_names])
        n = table.num_rows
        parts = []
        for start, length in _batches(n, self.batch_size):
            batch = table.slice(start, length)
            try:
                result = self.fn(_to_frame(batch, self.frame))
            except Exception as e:  # the user's code
                raise RunnerError(f"the pipeline failed on a batch of {length} rows with inputs "
                                  f"{batch.column_names}: {type(e).__name__}: {e}", runner=self.name) from e
            parts.append(self._as_features(result, length))
        if not parts:
            return pa.table({})
        return parts[0] if len(parts) == 1 else pa.concat_tables(parts, promote_options="permissive")

    def _as_features(self, result: Any, n: int) -> pa.Table:
        try:
            if isinstance(result, pa.Table):
                out = result
            elif hasattr(result, "to_numpy") and hasattr(result, "columns"):  # a DataFrame
                out = pa.Table.from_pandas(result, preserve_index=False)
            elif isinstance(result, Mapping):
                out = pa.table({str(k): (v if isinstance(v, pa.Array | pa.ChunkedArray) else np.asarray(v))
                                for k, v in result.items()})
            else:
                raise RunnerError(f"expected a table, DataFrame or mapping of features, got {type(result).__name__}",
                                  runner=self.name)
        except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError) as e:
            raise RunnerError(f"cannot read the pipeline's output as columns: {e}", runner=self.name) from e
        if out.num_rows != n:
            raise RunnerError(f"expected {n} rows of features (one per input row), got {out.num_rows}",
                              runner=self.name)
        names = [c if c.startswith(FEATURE_PREFIX) else FEATURE_PREFIX + c for c in out.column_names]
        return out.rename_columns(names)


# --------------------------------------------------------------------------- HTTP


class HttpRunner:
    """A model behind an HTTP endpoint that takes JSON batches.

    Each batch is POSTed as ``{"instances": [{"<feature>": value, ...}, ...]}`` (feature names
    without the prefix; NaN sent as ``null``). The response is a JSON list of scores, or an object
    with one under ``predictions``, ``scores`` or ``outputs``; each element a number, a list of
    two-class probabilities, or an object with ``score`` or ``probability``. Batches go out on up
    to ``max_concurrency`` threads; a connection error, a timeout, a 429 or a 5xx is retried
    ``retries`` times, waiting ``backoff * 2**attempt`` seconds; any other 4xx fails at once.

    Parameters
    ----------
    url
        The endpoint (``http://`` or ``https://``).
    feature_order
        Feature names to send, in order (default: every ``feature.*`` column).
    batch_size
        Requests per POST.
    timeout
        Seconds to wait for each response.
    retries
        Extra attempts after a retryable failure.
    backoff
        Base wait in seconds before a retry.
    max_concurrency
        POSTs in flight at once.
    headers
        Extra HTTP headers (e.g. authorisation).
    """

    def __init__(self, url: str, *, feature_order: Sequence[str] | None = None, batch_size: int = 1_000,
                 timeout: float = 10.0, retries: int = 3, backoff: float = 0.2, max_concurrency: int = 4,
                 headers: Mapping[str, str] | None = None) -> None:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"expected an http:// or https:// URL, got {url!r}")
        if batch_size < 1 or max_concurrency < 1 or retries < 0 or timeout <= 0 or backoff < 0:
            raise ConfigError("expected batch_size >= 1, max_concurrency >= 1, retries >= 0, timeout > 0 and "
                              f"backoff >= 0; got {batch_size}, {max_concurrency}, {retries}, {timeout}, {backoff}")
        self.url = url
        self.feature_order = None if feature_order is None else tuple(feature_order)
        self.batch_size = batch_size
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_concurrency = max_concurrency
        self.headers = {"Content-Type": "application/json", "Accept": "application/json", **(headers or {})}
        self.attempts = 0

    def __repr__(self) -> str:
        return f"HttpRunner({self.url})"

    def run(self, features: pa.Table) -> FloatArray:
        """Score every row through the endpoint, ``batch_size`` rows per POST."""
        table = _strip(features, FEATURE_PREFIX, self.feature_order, what=f"endpoint {self.url}")
        table = pa.table([_nan_to_null(table.column(i)) for i in range(table.num_columns)], names=table.column_names)
        spans = _batches(table.num_rows, self.batch_size)
        out = np.empty(table.num_rows, dtype=np.float64)
        if not spans or table.num_rows == 0:
            return out
        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(spans))) as pool:
            futures = [(start, length, pool.submit(self._post, table.slice(start, length).to_pylist()))
                       for start, length in spans]
            for start, length, fut in futures:
                out[start:start + length] = _as_scores(fut.result(), length, self.url)
        return out

    def _post(self, rows: list[dict[str, Any]]) -> list[float | None]:
        body = json.dumps({"instances": rows}, default=str).encode()
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            self.attempts += 1
            req = urllib.request.Request(self.url, data=body, headers=self.headers, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    payload = resp.read()
            except urllib.error.HTTPError as e:
                detail = e.read()[:200].decode(errors="replace")
                if e.code == 429 or e.code >= 500:
                    last = f"HTTP {e.code}: {detail}"
                    continue
                raise RunnerError(f"the endpoint refused a batch of {len(rows)} rows with HTTP {e.code}: {detail}",
                                  runner=self.url) from e
            except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
                last = f"{type(e).__name__}: {getattr(e, 'reason', e)}"
                continue
            return self._parse(payload, len(rows))
        raise RunnerError(f"no answer after {self.retries + 1} attempts (timeout {self.timeout}s); last error: {last}",
                          runner=self.url)

    def _parse(self, payload: bytes, n: int) -> list[float | None]:
        try:
            data = json.loads(payload)
        except json.JSONDecodeError as e:
            raise RunnerError(f"expected a JSON response, got {payload[:80]!r}", runner=self.url) from e
        if isinstance(data, Mapping):
            for key in ("predictions", "scores", "outputs"):
                if key in data:
                    data = data[key]
                    break
            else:
                raise RunnerError(f"expected a list of scores, or an object with 'predictions', 'scores' or "
                                  f"'outputs'; got keys {sorted(data)}", runner=self.url)
        if not isinstance(data, list) or len(data) != n:
            got = f"{len(data)} items" if isinstance(data, list) else type(data).__name__
            raise RunnerError(f"expected {n} scores (one per instance), got {got}", runner=self.url)
        return [_one_score(v, self.url) for v in data]


def _nan_to_null(col: pa.ChunkedArray) -> pa.ChunkedArray:
    if pa.types.is_floating(col.type):
        return pc.if_else(pc.is_nan(col), pa.scalar(None, col.type), col)
    return col


def _one_score(v: Any, url: str) -> float | None:
    if isinstance(v, Mapping):
        for key in ("score", "probability", "prediction"):
            if key in v:
                return _one_score(v[key], url)
        raise RunnerError(f"expected an object with 'score' or 'probability', got keys {sorted(v)}", runner=url)
    if isinstance(v, list):
        if len(v) in (1, 2):
            return _one_score(v[-1], url)
        raise RunnerError(f"expected one score or two-class probabilities per instance, got {v!r}", runner=url)
    if v is None or (isinstance(v, int | float) and not isinstance(v, bool)):
        return None if v is None else float(v)
    raise RunnerError(f"expected a numeric score, got {v!r}", runner=url)


# --------------------------------------------------------------------------- loading


def _load_object(spec: str, *, what: str) -> Any:
    m = _ENTRY_POINT.match(spec)
    if m is None:
        raise ConfigError(f"expected an entry point 'package.module:function' for the {what}, got {spec!r}")
    module_name, attr = m.group("module"), m.group("attr")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            if not path.is_file():
                raise ReadError(f"the {what}'s module file does not exist", path=path)
            mod_spec = importlib.util.spec_from_file_location(path.stem, path)
            if mod_spec is None or mod_spec.loader is None:
                raise ReadError(f"cannot import it as the {what}'s module", path=path)
            module = importlib.util.module_from_spec(mod_spec)
            sys.modules.setdefault(path.stem, module)
            mod_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(f"cannot import module {module_name!r} for the {what} ({e}); is it installed, or on "
                          "PYTHONPATH?") from e
    except (ReadError, ConfigError):
        raise
    except Exception as e:  # importing user code can raise anything
        raise ConfigError(f"importing module {module_name!r} for the {what} failed: {type(e).__name__}: {e}") from e
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(f"module {module_name!r} has no attribute {attr!r} (expected the {what})") from None
    return obj


def _load_file(path: Path, *, what: str) -> Any:
    if not path.is_file():
        raise ReadError(f"{what} file not found (expected a joblib or pickle file)", path=path)
    try:
        import joblib

        return joblib.load(path)
    except Exception as e:  # unpickling can raise anything: a missing class, a truncated file
        raise ReadError(f"cannot load it as a joblib/pickle {what}: {type(e).__name__}: {e}", path=path) from e


def load_runner(spec: str | Path, *, feature_order: Sequence[str] | None = None,
                batch_size: int | None = None) -> Runner:
    """Build a model runner from a path, an entry point or a URL.

    Parameters
    ----------
    spec
        ``model.joblib`` / ``.pkl`` / ``.pickle`` (an estimator, or a pickled callable);
        ``package.module:function`` or ``path/to/file.py:function`` (a function returning scores,
        or a module-level estimator); or an ``http(s)://`` URL of a JSON model endpoint.
    feature_order
        The features the model takes, in order (e.g. the reference's ``feature.*`` columns).
    batch_size
        Rows per call (per POST for a URL); the runner's default when ``None``.

    Raises
    ------
    ReadError
        The model file is missing or cannot be unpickled.
    ConfigError
        The spec is none of the accepted forms, the module cannot be imported, or the object is
        neither an estimator nor callable.
    """
    text = str(spec)
    if text.startswith(("http://", "https://")):
        return HttpRunner(text, feature_order=feature_order, batch_size=batch_size or 1_000)
    path = Path(text)
    if path.suffix.lower() in _MODEL_SUFFIXES:
        obj = _load_file(path, what="model")
        where = str(path)
    elif _ENTRY_POINT.match(text) and not path.exists():
        obj = _load_object(text, what="model")
        where = text
    else:
        if path.exists():
            raise ConfigError(f"unknown model file type {path.suffix or '(none)'!r}; expected one of "
                              f"{list(_MODEL_SUFFIXES)}", path=path)
        raise ConfigError(f"expected a model file (.joblib, .pkl, .pickle), an entry point 'package.module:function' "
                          f"or an http(s):// URL, got {text!r}")
    if hasattr(obj, "predict_proba") or hasattr(obj, "predict"):
        return EstimatorRunner(obj, feature_order=feature_order, batch_size=batch_size or DEFAULT_BATCH_SIZE)
    if callable(obj):
        return FunctionRunner(obj, feature_order=feature_order, name=where,
                              batch_size=batch_size or DEFAULT_BATCH_SIZE)
    raise ConfigError(f"expected an estimator with predict_proba/predict or a callable, got "
                      f"{type(obj).__name__} from {where}")


def load_pipeline(spec: PipelineRunner | str | Path | Callable[[Any], Any], *,
                  frame: Frame = Frame.AUTO, keep_prefix: bool = False) -> PipelineRunner:
    """Build a feature-pipeline runner from an entry point, a pickled callable or a callable.

    Parameters
    ----------
    spec
        ``package.module:function``, ``path/to/file.py:function``, a ``.joblib``/``.pkl`` file of a
        callable (or of an object with ``transform``), or the callable itself.
    frame
        What the function receives (see :class:`Frame`).
    keep_prefix
        Pass the ``input.*`` names with their prefix.

    Raises
    ------
    ConfigError, ReadError
        As for :func:`load_runner`.
    """
    if isinstance(spec, PipelineRunner):
        return spec
    if callable(spec) and not isinstance(spec, str | Path):
        return PipelineRunner(spec, frame=frame, keep_prefix=keep_prefix)
    text = str(spec)
    path = Path(text)
    if path.suffix.lower() in _MODEL_SUFFIXES:
        obj = _load_file(path, what="feature pipeline")
    elif _ENTRY_POINT.match(text) and not path.exists():
        obj = _load_object(text, what="feature pipeline")
    else:
        raise ConfigError(f"expected a feature pipeline as 'package.module:function' or a .joblib/.pkl file of a "
                          f"callable, got {text!r}")
    if not callable(obj) and hasattr(obj, "transform"):
        obj = obj.transform
    if not callable(obj):
        raise ConfigError(f"expected a callable feature pipeline, got {type(obj).__name__} from {text}")
    return PipelineRunner(obj, frame=frame, keep_prefix=keep_prefix, name=text)
