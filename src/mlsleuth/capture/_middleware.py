"""``CaptureMiddleware``: logs each request to a model endpoint of an ASGI app (FastAPI, Starlette, ...).

Pure ASGI: it imports no web framework. Bodies are copied as they stream past (up to a size cap), never
held back, so the app's responses are not delayed or altered except for an ``X-Request-ID`` header.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

if TYPE_CHECKING:
    from mlsleuth.capture._logger import Logger

__all__ = ["CaptureMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_ERROR_TEXT_MAX = 500
_REQUEST_ID_HEADER = b"x-request-id"


def _json(chunks: list[bytes]) -> Any:
    if not chunks:
        return None
    try:
        return json.loads(b"".join(chunks))
    except (ValueError, UnicodeDecodeError):
        return None


class CaptureMiddleware:
    """ASGI middleware that logs every request whose path starts with ``path_prefix``.

    For each such request it logs: ``request_id`` from the ``X-Request-ID`` header (or a new uuid4 hex,
    which is then returned in the response's ``X-Request-ID`` header); the request's JSON object's
    top-level keys as ``input.*`` (or the query parameters when there is no JSON body); ``score`` and
    ``prediction`` from the response JSON (an object's ``score``/``prediction`` keys, or a bare number as
    the score); the latency; and ``error`` when the app raised or answered with a status >= 500.

    Parameters
    ----------
    app
        The ASGI application to wrap.
    logger
        The :class:`Logger` to log to.
    model, model_version
        Logged with each request; default to the logger's.
    path_prefix
        Only requests whose path starts with this are logged.
    max_body_bytes
        Bodies larger than this are not parsed (their inputs or outputs are not logged).
    extract
        Optional ``extract(request_json, response_json) -> mapping`` of extra ``Logger.log`` keyword
        arguments (``features``, ``score``, ``prediction``, metadata, ...), overriding the defaults.

    Examples
    --------
    >>> from fastapi import FastAPI  # doctest: +SKIP
    >>> app = FastAPI()  # doctest: +SKIP
    >>> app.add_middleware(CaptureMiddleware, logger=logger, model="fraud", model_version="3")  # doctest: +SKIP
    """

    def __init__(
        self,
        app: ASGIApp,
        logger: Logger,
        *,
        model: str | None = None,
        model_version: str | None = None,
        path_prefix: str = "/predict",
        max_body_bytes: int = 1_000_000,
        extract: Callable[[Any, Any], Mapping[str, Any]] | None = None,
    ) -> None:
        self.app = app
        self.logger = logger
        self.model = model
        self.model_version = model_version
        self.path_prefix = path_prefix
        self.max_body_bytes = max_body_bytes
        self.extract = extract

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http" or not str(scope.get("path", "")).startswith(self.path_prefix):
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter_ns()
        rid = None
        for name, value in scope.get("headers") or ():
            if name.lower() == _REQUEST_ID_HEADER:
                rid = value.decode("latin-1")
                break
        echo_id = rid is None
        if rid is None:
            rid = uuid.uuid4().hex
        cap = self.max_body_bytes
        req: list[bytes] = []
        resp: list[bytes] = []
        size = [0, 0]
        status = [0]

        async def receive_copy() -> Message:
            msg = await receive()
            try:
                if msg.get("type") == "http.request" and size[0] <= cap:
                    body = msg.get("body") or b""
                    size[0] += len(body)
                    if size[0] <= cap:
                        req.append(body)
            except Exception as e:  # never let capture break the request
                self.logger._core.internal_error(e)
            return msg

        async def send_copy(msg: Message) -> None:
            try:
                kind = msg.get("type")
                if kind == "http.response.start":
                    status[0] = int(msg.get("status", 0))
                    if echo_id:
                        headers = list(msg.get("headers") or ())
                        if not any(k.lower() == _REQUEST_ID_HEADER for k, _ in headers):
                            msg = {**msg, "headers": [*headers, (_REQUEST_ID_HEADER, rid.encode("latin-1"))]}
                elif kind == "http.response.body" and size[1] <= cap:
                    body = msg.get("body") or b""
                    size[1] += len(body)
                    if size[1] <= cap:
                        resp.append(body)
            except Exception as e:  # never let capture break the response
                self.logger._core.internal_error(e)
            await send(msg)

        try:
            await self.app(scope, receive_copy, send_copy)
        except Exception as e:
            text = f"{type(e).__name__}: {e}"
            self._record(scope, rid, t0, req if size[0] <= cap else [], [], status[0] or 500, text[:_ERROR_TEXT_MAX])
            raise
        self._record(scope, rid, t0, req if size[0] <= cap else [], resp if size[1] <= cap else [], status[0], None)

    def _record(
        self, scope: Scope, rid: str, t0: int, req: list[bytes], resp: list[bytes], status: int, error: str | None
    ) -> None:
        logger = self.logger
        try:
            latency = (time.perf_counter_ns() - t0) / 1e6
            body = _json(req)
            if isinstance(body, Mapping):
                inputs: Mapping[str, Any] | None = body
            elif body is None and scope.get("query_string"):
                inputs = dict(parse_qsl(scope["query_string"].decode("latin-1")))
            else:
                inputs = None
            out = _json(resp)
            score = prediction = None
            if isinstance(out, Mapping):
                score, prediction = out.get("score"), out.get("prediction")
            elif isinstance(out, int | float) and not isinstance(out, bool):
                score = out
            elif isinstance(out, str | bool):
                prediction = out
            if error is None and status >= 500:
                error = f"HTTP {status}"
            kwargs: dict[str, Any] = {
                "model": self.model,
                "model_version": self.model_version,
                "inputs": inputs,
                "score": score,
                "prediction": prediction,
                "latency_ms": latency,
                "error": error,
            }
            if self.extract is not None:
                kwargs.update(self.extract(body, out))
            logger.log(rid, **kwargs)
        except Exception as e:
            logger._core.internal_error(e)
