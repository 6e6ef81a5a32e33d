"""Request capture for model servers: a non-blocking logger, its sinks, a decorator and ASGI middleware.

>>> from mlsleuth.capture import Logger, MemorySink
>>> logger = Logger(MemorySink(), model="fraud", model_version="3", redact=["email"])
>>> logger.log("r1", inputs={"email": "a@b.c", "amount": 9.5}, score=0.12, region="EU")
>>> logger.close()
True
>>> logger.sink.table().column("input.email").to_pylist()
['[redacted]']
"""

from mlsleuth.capture._batch import Redaction, records_to_table
from mlsleuth.capture._decorator import default_extract
from mlsleuth.capture._logger import Logger, LoggerStats
from mlsleuth.capture._middleware import CaptureMiddleware
from mlsleuth.capture._sinks import (
    ARROW_STREAM_MEDIA_TYPE,
    Compression,
    HttpSink,
    HttpSinkStats,
    MemorySink,
    Sink,
    StoreSink,
    table_to_ipc,
)

__all__ = [
    "ARROW_STREAM_MEDIA_TYPE",
    "CaptureMiddleware",
    "Compression",
    "HttpSink",
    "HttpSinkStats",
    "Logger",
    "LoggerStats",
    "MemorySink",
    "Redaction",
    "Sink",
    "StoreSink",
    "default_extract",
    "records_to_table",
    "table_to_ipc",
]
