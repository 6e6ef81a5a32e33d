"""The ``mlsleuth`` command line: thin commands over the library.

Every command reads the store named by ``--store`` (or ``$MLSLEUTH_STORE``, default
``./.mlsleuth``). Errors in the input exit with status 2 and one line on stderr.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from enum import StrEnum
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from mlsleuth.errors import MlsleuthError

__all__ = ["app", "main"]

app = typer.Typer(
    name="mlsleuth",
    help="Find and fix what broke in production ML models.\n\n"
         "Examples:\n\n"
         "  mlsleuth init\n\n"
         "  mlsleuth ingest log requests.parquet\n\n"
         "  mlsleuth status\n\n"
         "  mlsleuth query \"SELECT model_version, count(*) FROM log GROUP BY 1\"",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])

StoreOpt = Annotated[Path, typer.Option("--store", envvar="MLSLEUTH_STORE",
                                        help="The store folder (env MLSLEUTH_STORE).")]
DEFAULT_STORE = Path(".mlsleuth")


def _friendly(fn: F) -> F:
    """Turn mlsleuth errors into one line on stderr and exit status 2."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MlsleuthError as e:
            err.print(f"mlsleuth: error: {e}", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except Exception as e:
            if os.environ.get("MLSLEUTH_DEBUG"):
                raise
            err.print(f"mlsleuth: internal error: {type(e).__name__}: {e} (set MLSLEUTH_DEBUG=1 for the traceback)",
                      markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


class Kind(StrEnum):
    """What ``mlsleuth ingest`` reads."""

    log = "log"
    labels = "labels"
    events = "events"
    lineage = "lineage"


class OutFormat(StrEnum):
    """How ``query`` and ``status`` print."""

    table = "table"
    json = "json"
    csv = "csv"


@app.command()
@_friendly
def init(store: StoreOpt = DEFAULT_STORE) -> None:
    """Create an empty store (a folder of hive-partitioned Parquet plus a DuckDB catalog).

    Example: mlsleuth init --store ./monitoring
    """
    from mlsleuth.store import LocalStore

    s = LocalStore.init(store)
    out.print(f"initialised store at {s.path}")


@app.command()
@_friendly
def ingest(
    kind: Annotated[Kind, typer.Argument(help="log, labels, events or lineage")],
    paths: Annotated[list[Path], typer.Argument(help="Files or folders (Parquet, CSV, JSON Lines, JSON).")],
    store: StoreOpt = DEFAULT_STORE,
    config: Annotated[Path | None, typer.Option(help="A model config TOML (roles, segments, ...).")] = None,
    create: Annotated[bool, typer.Option(help="Create the store if it does not exist.")] = True,
) -> None:
    """Add prediction logs, labels, change events or lineage to the store.

    Bad rows are quarantined with a reason; nothing already stored is touched.

    Examples: mlsleuth ingest log logs/2026-03-06.parquet;
    mlsleuth ingest labels labels.csv; mlsleuth ingest events events.jsonl
    """
    from rich.progress import Progress

    from mlsleuth.schema import DataKind, ModelConfig
    from mlsleuth.store import LocalStore

    cfg = ModelConfig.from_toml(config) if config else None
    s = LocalStore.init(store) if create else LocalStore.open(store)
    target: Any = {Kind.log: DataKind.LOG, Kind.labels: DataKind.LABELS}.get(kind, kind.value)
    total_ok = total_bad = 0
    with Progress(console=err, transient=True) as progress:
        task = progress.add_task(f"ingesting {kind.value}", total=len(paths))
        for p in paths:
            res = s.ingest(p, target, config=cfg)
            total_ok += res.accepted
            total_bad += res.quarantined
            progress.advance(task)
            line = f"{p}: {res.accepted:,} accepted, {res.quarantined:,} quarantined"
            out.print(line, markup=False, highlight=False)
            for reason, count in res.reasons[:5]:
                out.print(f"  {count:,} x {reason}", markup=False, highlight=False)
    if len(paths) > 1:
        out.print(f"total: {total_ok:,} accepted, {total_bad:,} quarantined")


@app.command()
@_friendly
def status(
    store: StoreOpt = DEFAULT_STORE,
    fmt: Annotated[OutFormat, typer.Option("--format", help="table or json")] = OutFormat.table,
) -> None:
    """Models, versions, rows, time span, last request, label coverage and quarantined rows."""
    from mlsleuth.store import LocalStore

    s = LocalStore.open(store)
    st = s.status()
    if fmt is OutFormat.json:
        from dataclasses import asdict

        sys.stdout.write(json.dumps({**asdict(st), "lineage_edges": len(s.lineage().edges)}, default=str) + "\n")
        return
    t = Table(title=f"mlsleuth store {store}")
    for col in ("model", "versions", "rows", "first request", "last request", "labelled"):
        t.add_column(col, justify="right" if col in ("rows", "labelled") else "left")
    for m in st.models:
        t.add_row(m.name, ", ".join(m.versions), f"{m.rows:,}", _ts(m.first_ts), _ts(m.last_ts),
                  f"{m.labelled_fraction:.1%}")
    out.print(t)
    out.print(f"labelled requests: {st.labels:,}   quarantined rows: {st.quarantined:,}   "
              f"change events: {st.events:,}   lineage edges: {len(s.lineage().edges):,}   files: {st.files:,}   "
              f"on disk: {st.bytes / 1e6:.1f} MB")


def _ts(value: Any) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M:%S UTC")


@app.command()
@_friendly
def query(
    sql: Annotated[str, typer.Argument(help="SQL over the views log, labels, labels_all, events, lineage, quarantine")],
    store: StoreOpt = DEFAULT_STORE,
    fmt: Annotated[OutFormat, typer.Option("--format", help="table, json or csv")] = OutFormat.table,
    limit: Annotated[int, typer.Option(help="Print at most this many rows (table format).")] = 50,
) -> None:
    """Run SQL over the store.

    Example: mlsleuth query "SELECT date_trunc('hour', ts) h, avg(score) FROM log GROUP BY 1 ORDER BY 1"
    """
    from mlsleuth.store import LocalStore

    result = LocalStore.open(store).sql(sql)
    if fmt is OutFormat.json:
        sys.stdout.write(json.dumps(result.to_pylist(), default=str) + "\n")
    elif fmt is OutFormat.csv:
        import pyarrow.csv as pacsv

        pacsv.write_csv(result, sys.stdout.buffer)
    else:
        t = Table()
        for name in result.column_names:
            t.add_column(name)
        for row in result.slice(0, limit).to_pylist():
            t.add_row(*("" if v is None else str(v) for v in row.values()))
        out.print(t)
        if result.num_rows > limit:
            out.print(f"({result.num_rows:,} rows, first {limit} shown)")


class ReportFormat(StrEnum):
    """How ``diagnose`` writes its result."""

    json = "json"
    md = "md"
    html = "html"


def _parse_ts(value: str | None, name: str) -> Any:
    if value is None:
        return None
    from mlsleuth.errors import InputError
    from mlsleuth.schema import parse_timestamp

    try:
        return parse_timestamp(value)
    except ValueError:
        raise InputError(f"expected an ISO-8601 timestamp such as 2026-03-06T18:00:00Z, got {value!r}",
                         column=name) from None


@app.command()
@_friendly
def diagnose(
    case_dir: Annotated[Path | None, typer.Argument(help="A folder with log.*, reference.*, labels.*, "
                                                    "events.jsonl, lineage.json, model.joblib")] = None,
    log: Annotated[Path | None, typer.Option(help="The prediction log (Parquet file/folder, CSV, JSONL).")] = None,
    reference: Annotated[Path | None, typer.Option(help="Training/reference data.")] = None,
    labels: Annotated[Path | None, typer.Option(help="Labels: request_id, label[, label_ts].")] = None,
    events: Annotated[Path | None, typer.Option(help="Change events (JSON Lines).")] = None,
    lineage: Annotated[Path | None, typer.Option(help="Lineage (JSON).")] = None,
    model: Annotated[str | None, typer.Option(help="A joblib/pickle model or a module:function entry point.")] = None,
    config: Annotated[Path | None, typer.Option(help="A model config TOML (roles, segments, ...).")] = None,
    since: Annotated[str | None, typer.Option(help="Only requests at or after this time (ISO-8601).")] = None,
    until: Annotated[str | None, typer.Option(help="Only requests before this time (ISO-8601).")] = None,
    symptom: Annotated[str | None, typer.Option(help="A metric to focus on, e.g. false_positive_rate.")] = None,
    fmt: Annotated[ReportFormat, typer.Option("--format", help="json, md or html")] = ReportFormat.json,
    out_file: Annotated[Path | None, typer.Option("--out", help="Write here instead of standard output.")] = None,
) -> None:
    """Find what broke, with no symptom given: verdict, ranked root causes, evidence, next steps.

    Examples: mlsleuth diagnose cases/fraud-weekend;
    mlsleuth diagnose --log log.parquet --reference train.parquet --events events.jsonl --format md
    """
    import warnings

    from mlsleuth.diagnosis import diagnose as run_diagnosis
    from mlsleuth.diagnosis import find_case_files
    from mlsleuth.errors import InputError
    from mlsleuth.schema import ModelConfig

    warnings.filterwarnings("ignore")
    files: dict[str, Any] = dict(find_case_files(case_dir)) if case_dir is not None else {}
    for key, val in (("log", log), ("reference", reference), ("labels", labels), ("events", events),
                     ("lineage", lineage), ("model", model), ("config", config)):
        if val is not None:
            files[key] = val
    if "log" not in files:
        raise InputError("no log given: pass a case folder or --log PATH")
    cfg_path = files.pop("config", None)
    cfg = ModelConfig.from_toml(cfg_path) if cfg_path else None
    result = run_diagnosis(files.pop("log"), config=cfg, since=_parse_ts(since, "--since"),
                           until=_parse_ts(until, "--until"), symptom=symptom, **files)
    from mlsleuth.report import render

    text = render(result, fmt.value)
    if out_file is not None:
        out_file.write_text(text, encoding="utf-8")
        err.print(f"{result.verdict.value}: report written to {out_file}", markup=False, highlight=False)
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


@app.command()
@_friendly
def demo(
    folder: Annotated[Path, typer.Option("--dir", help="Where the demo case and store are written.")] = Path(
        "mlsleuth-demo"),
    seed: Annotated[int, typer.Option(help="Seed of the generated world.")] = 0,
) -> None:
    """Build the card-fraud demo week into an embedded store, then show its status.

    The week holds the seed incident: an upstream warehouse change on Friday evening
    cuts average transaction amounts by about 30 % and false positives triple.
    """
    from mlsleuth.scenarios import build_demo

    with err.status("building the demo week (training data, model, 7 days of requests, labels, events)"):
        result = build_demo(folder, seed=seed)
    out.print(f"demo case written to {result.case_dir} and ingested into the store {result.store_dir}")
    status(store=result.store_dir, fmt=OutFormat.table)
    out.print(f"\ntry: .venv/bin/mlsleuth query --store {result.store_dir} "
              "\"SELECT date_trunc('day', ts) AS day, count(*) AS n, avg(prediction) AS alert_rate "
              "FROM log GROUP BY 1 ORDER BY 1\"", markup=False, highlight=False)


def main() -> None:
    """Entry point of the ``mlsleuth`` console script."""
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
