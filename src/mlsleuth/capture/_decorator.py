"""``Logger.capture``: a decorator that logs each call of a predict function."""

from __future__ import annotations

import functools
import inspect
import numbers
import time
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, cast

if TYPE_CHECKING:
    from mlsleuth.capture._logger import Logger

__all__ = ["default_extract", "make_capture"]

F = TypeVar("F", bound=Callable[..., Any])
_ERROR_TEXT_MAX = 500


def default_extract(result: Any) -> tuple[float | None, Any]:
    """Split a predict function's return value into ``(score, prediction)``.

    A bool or string is a prediction; another real number (Python or NumPy) is a score; a mapping
    gives its ``score`` and ``prediction`` keys; anything else is neither.

    Examples
    --------
    >>> default_extract(0.7), default_extract({"score": 0.2, "prediction": "deny"}), default_extract("ok")
    ((0.7, None), (0.2, 'deny'), (None, 'ok'))
    """
    if isinstance(result, bool | str):
        return None, result
    if isinstance(result, numbers.Real):
        return float(result), None
    if isinstance(result, Mapping):
        return result.get("score"), result.get("prediction")
    item = getattr(result, "item", None)  # 0-d NumPy arrays and 1-element tensors
    if callable(item) and getattr(result, "size", None) == 1:
        try:
            return default_extract(item())
        except Exception:
            return None, None
    return None, None


def _default_inputs(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Mapping[str, Any] | None:
    for a in args:
        if isinstance(a, Mapping):
            return a
    return kwargs or None


def _error_text(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}"
    return text if len(text) <= _ERROR_TEXT_MAX else text[: _ERROR_TEXT_MAX - 3] + "..."


def make_capture(
    logger: Logger,
    *,
    model: str | None,
    model_version: str | None,
    request_id: Callable[..., Any] | None,
    inputs: Callable[..., Mapping[str, Any] | None] | None,
    features: Callable[..., Mapping[str, Any] | None] | None,
    extract: Callable[[Any], tuple[float | None, Any]] | None,
    meta: dict[str, Any],
) -> Callable[[F], F]:
    """Build the decorator behind :meth:`Logger.capture` (see there)."""
    get_extract = extract or default_extract

    def record(args: tuple[Any, ...], kwargs: dict[str, Any], t0: int, result: Any, error: str | None) -> None:
        # Everything here is the logger's business: its failures are counted, never raised.
        try:
            latency = (time.perf_counter_ns() - t0) / 1e6
            rid = request_id(*args, **kwargs) if request_id is not None else uuid.uuid4().hex
            ins = inputs(*args, **kwargs) if inputs is not None else _default_inputs(args, kwargs)
            feats = features(*args, **kwargs) if features is not None else None
            score, prediction = get_extract(result) if error is None else (None, None)
            logger.log(
                rid,
                model=model,
                model_version=model_version,
                inputs=ins,
                features=feats,
                prediction=prediction,
                score=score,
                latency_ms=latency,
                error=error,
                **meta,
            )
        except Exception as e:
            logger._core.internal_error(e)

    def decorate(fn: F) -> F:
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def awrapper(*args: Any, **kwargs: Any) -> Any:
                t0 = time.perf_counter_ns()
                try:
                    result = await fn(*args, **kwargs)
                except Exception as e:
                    record(args, kwargs, t0, None, _error_text(e))
                    raise
                record(args, kwargs, t0, result, None)
                return result

            return cast(F, awrapper)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter_ns()
            try:
                result = fn(*args, **kwargs)
            except Exception as e:
                record(args, kwargs, t0, None, _error_text(e))
                raise
            record(args, kwargs, t0, result, None)
            return result

        return cast(F, wrapper)

    return decorate
