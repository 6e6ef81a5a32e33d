"""mlsleuth: find and fix what broke in production machine-learning models."""

from mlsleuth._version import __version__
from mlsleuth.errors import (
    CaptureError,
    ConfigError,
    EngineError,
    InputError,
    MlsleuthError,
    NotFittedError,
    ReadError,
    SchemaError,
    StoreError,
    StoreNotFoundError,
)
from mlsleuth.schema import ChangeEvent, Lineage, LogSchema, ModelConfig, Role, infer_schema

__all__ = [
    "CaptureError",
    "ChangeEvent",
    "ConfigError",
    "EngineError",
    "InputError",
    "Lineage",
    "LogSchema",
    "MlsleuthError",
    "ModelConfig",
    "NotFittedError",
    "ReadError",
    "Role",
    "SchemaError",
    "StoreError",
    "StoreNotFoundError",
    "__version__",
    "infer_schema",
]
