"""The public surface changes only on purpose (httpx's test_exported_members pattern)."""

from __future__ import annotations

import importlib

import pytest

import mlsleuth

EXPECTED_TOP = [
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


def test_top_level_names_are_exactly_the_curated_list() -> None:
    assert mlsleuth.__all__ == EXPECTED_TOP
    for name in mlsleuth.__all__:
        assert hasattr(mlsleuth, name)


def _isort_key(name: str) -> tuple[int, str]:
    # The order ruff's RUF022 keeps: CONSTANTS, then Classes, then functions.
    kind = 0 if name.isupper() else 1 if name[:1].isupper() else 2
    return kind, name


@pytest.mark.parametrize("module", ["mlsleuth", "mlsleuth.schema", "mlsleuth.errors", "mlsleuth.store",
                                    "mlsleuth.capture", "mlsleuth.stats", "mlsleuth.profiles", "mlsleuth.replay",
                                    "mlsleuth.diagnosis", "mlsleuth.incidents", "mlsleuth.report",
                                    "mlsleuth.testing"])
def test_every_all_is_sorted_and_resolvable(module: str) -> None:
    mod = importlib.import_module(module)
    names = [n for n in mod.__all__ if not n.startswith("__")]
    assert names == sorted(names, key=_isort_key)
    assert len(set(names)) == len(names)
    assert all(hasattr(mod, n) for n in mod.__all__)


def test_testing_exports_the_regression_and_multiclass_generators() -> None:
    import mlsleuth.testing as testing

    for name in ("KindCase", "MULTICLASS_SCENARIOS", "REGRESSION_SCENARIOS", "multiclass_case", "regression_case"):
        assert name in testing.__all__


def test_testing_exports_the_real_data_cases() -> None:
    import mlsleuth.testing as testing

    for name in ("REAL_DATASETS", "REAL_SCENARIOS", "real_case", "real_cases"):
        assert name in testing.__all__


def test_every_error_derives_from_mlsleuth_error() -> None:
    import mlsleuth.errors as errors

    for name in errors.__all__:
        assert issubclass(getattr(errors, name), errors.MlsleuthError)


def test_importing_the_package_does_not_pull_server_or_cli_dependencies() -> None:
    import subprocess
    import sys

    code = ("import sys, mlsleuth, mlsleuth.capture, mlsleuth.store; "
            "bad = [m for m in ('fastapi', 'uvicorn', 'typer', 'rich', 'pandas', 'sklearn') if m in sys.modules]; "
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""
