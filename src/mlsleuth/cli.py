"""The ``mlsleuth`` command line: thin commands over the library.

Every command reads the store named by ``--store`` (or ``$MLSLEUTH_STORE``, default
``./.mlsleuth``). Errors in the input exit with status 2 and one line on stderr.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from mlsleuth.errors import MlsleuthError

if TYPE_CHECKING:
    from mlsleuth.schema import ModelConfig

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
ReadStoreOpt = Annotated[Path, typer.Option("--store", envvar="MLSLEUTH_STORE",
                                            help="The store: a folder, or a URL read-only (s3://, gs://, abfs://, "
                                                 "file://) (env MLSLEUTH_STORE).")]
DEFAULT_STORE = Path(".mlsleuth")


class EngineName(StrEnum):
    """The query engine a command runs the store's queries on."""

    duckdb = "duckdb"
    spark = "spark"


EngineOpt = Annotated[EngineName | None, typer.Option(
    "--engine", help="Query engine: duckdb or spark (default: env MLSLEUTH_ENGINE, else the store's "
                     "mlsleuth.toml, else duckdb).")]
SparkMasterOpt = Annotated[str | None, typer.Option(
    "--spark-master", metavar="URL", help="With --engine spark: the master URL, e.g. local[4], spark://host:7077, "
                                          "yarn (default: env MLSLEUTH_SPARK_MASTER, the store's config, the active "
                                          "session's, else local[2]).")]


def store_location(store: Path | str) -> str:
    """The store's folder or URL as typed: a ``Path`` option turns ``s3://b/k`` into ``s3:/b/k``; undo that."""
    text = str(store)
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.-]+):/+(.*)$", text)  # two letters at least: C:/ is a Windows drive
    if m is None:
        return text
    scheme, rest = m.groups()
    return f"{scheme}:///{rest}" if scheme.lower() == "file" else f"{scheme}://{rest}"


def open_store_from_options(store: Path | str, engine: EngineName | str | None = None,
                            spark_master: str | None = None) -> Any:
    """The store named by ``--store`` on the engine named by ``--engine``/``--spark-master`` (for every command).

    A URL opens read-only (:class:`~mlsleuth.store.RemoteStore`); the engine is the flag's, else
    ``$MLSLEUTH_ENGINE``, else the store's ``mlsleuth.toml``, else DuckDB.
    """
    from mlsleuth.store import open_store

    name = engine.value if isinstance(engine, EngineName) else engine
    return open_store(store_location(store), engine=name, spark_master=spark_master)


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
    store: ReadStoreOpt = DEFAULT_STORE,
    fmt: Annotated[OutFormat, typer.Option("--format", help="table or json")] = OutFormat.table,
    engine: EngineOpt = None,
    spark_master: SparkMasterOpt = None,
) -> None:
    """Models, versions, rows, time span, last request, label coverage and quarantined rows."""
    s = open_store_from_options(store, engine, spark_master)
    st = s.status()
    if fmt is OutFormat.json:
        from dataclasses import asdict

        sys.stdout.write(json.dumps({**asdict(st), "lineage_edges": len(s.lineage().edges)}, default=str) + "\n")
        return
    t = Table(title=f"mlsleuth store {store_location(store)}")
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
    store: ReadStoreOpt = DEFAULT_STORE,
    fmt: Annotated[OutFormat, typer.Option("--format", help="table, json or csv")] = OutFormat.table,
    limit: Annotated[int, typer.Option(help="Print at most this many rows (table format).")] = 50,
    engine: EngineOpt = None,
    spark_master: SparkMasterOpt = None,
) -> None:
    """Run one read-only query (SELECT) over the store.

    The SQL is DuckDB's dialect on every engine (translated for Spark). DuckDB reads the store's
    data folders only: no other file, no COPY/ATTACH/INSTALL, no setting changes.

    Example: mlsleuth query "SELECT date_trunc('hour', ts) h, avg(score) FROM log GROUP BY 1 ORDER BY 1"
    """
    result = open_store_from_options(store, engine, spark_master).sql(sql)
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
    store: Annotated[Path | None, typer.Option(
        "--store", help="Diagnose what this store holds (log, labels, events, lineage), scanned where it lies, "
                        "instead of files.")] = None,
    model_name: Annotated[str | None, typer.Option(
        "--model-name", help="The model whose requests to diagnose (needed when the log or store holds several).")
    ] = None,
    engine: EngineOpt = None,
    spark_master: SparkMasterOpt = None,
    runbooks: Annotated[Path | None, typer.Option(
        "--runbooks", envvar="MLSLEUTH_RUNBOOKS", exists=True, file_okay=False,
        help="A folder of <cause>.md runbooks that replace the shipped ones (env MLSLEUTH_RUNBOOKS); the output "
             "names the override used.")] = None,
    ts_format: Annotated[str | None, typer.Option(
        "--ts-format", help="strptime layout of text times that are not ISO 8601, e.g. '%d/%m/%Y %H:%M'.")] = None,
    csv_delimiter: Annotated[str | None, typer.Option(
        "--csv-delimiter", help="Field separator of CSV files, e.g. ';' (decimal commas are then read).")] = None,
) -> None:
    """Find what broke, with no symptom given: verdict, ranked root causes, evidence, next steps.

    Examples: mlsleuth diagnose cases/fraud-weekend;
    mlsleuth diagnose --log log.parquet --reference train.parquet --events events.jsonl --format md;
    mlsleuth diagnose --store ./monitoring --model-name fraud --reference train.parquet --engine spark
    """
    with _runbooks_folder(runbooks):
        _diagnose(case_dir, log, reference, labels, events, lineage, model, config, since, until, symptom, fmt,
                  out_file, store, model_name, engine, spark_master, ts_format, csv_delimiter)


@contextmanager
def _runbooks_folder(folder: Path | None) -> Iterator[None]:
    """Name ``folder`` to the library as ``$MLSLEUTH_RUNBOOKS`` for one command, then restore the variable."""
    if folder is None:
        yield
        return
    before = os.environ.get("MLSLEUTH_RUNBOOKS")
    os.environ["MLSLEUTH_RUNBOOKS"] = str(folder)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("MLSLEUTH_RUNBOOKS", None)
        else:
            os.environ["MLSLEUTH_RUNBOOKS"] = before


def _diagnose(case_dir: Path | None, log: Path | None, reference: Path | None, labels: Path | None,
              events: Path | None, lineage: Path | None, model: str | None, config: Path | None, since: str | None,
              until: str | None, symptom: str | None, fmt: ReportFormat, out_file: Path | None, store: Path | None,
              model_name: str | None, engine: EngineName | None, spark_master: str | None,
              ts_format: str | None, csv_delimiter: str | None) -> None:
    """The body of ``diagnose``, run with the runbook folder named."""
    from mlsleuth.diagnosis import diagnose as run_diagnosis
    from mlsleuth.diagnosis import find_case_files
    from mlsleuth.errors import InputError

    if store is not None:
        if case_dir is not None or log is not None or labels is not None or events is not None or lineage is not None:
            raise InputError("--store diagnoses the store's log, labels, events and lineage: pass no case folder, "
                             "--log, --labels, --events or --lineage with it")
        from mlsleuth.diagnosis import diagnose_store

        st = open_store_from_options(store, engine, spark_master)
        try:
            cfg = _diagnosis_config(config)
            result = diagnose_store(st, model_name=model_name, reference=reference, model=model, config=cfg,
                                    since=_parse_ts(since, "--since"), until=_parse_ts(until, "--until"),
                                    symptom=symptom, charts=fmt is not ReportFormat.json)
        finally:
            st.close()
        _write_diagnosis(result, fmt, out_file)
        return
    files: dict[str, Any] = dict(find_case_files(case_dir)) if case_dir is not None else {}
    for key, val in (("log", log), ("reference", reference), ("labels", labels), ("events", events),
                     ("lineage", lineage), ("model", model), ("config", config)):
        if val is not None:
            files[key] = val
    if "log" not in files:
        raise InputError("no log given: pass a case folder or --log PATH")
    cfg_path = files.pop("config", None)
    cfg = _diagnosis_config(cfg_path)
    result = run_diagnosis(files.pop("log"), config=cfg, since=_parse_ts(since, "--since"),
                           until=_parse_ts(until, "--until"), symptom=symptom, model_name=model_name,
                           ts_format=ts_format, delimiter=csv_delimiter, charts=fmt is not ReportFormat.json,
                           **files)
    _write_diagnosis(result, fmt, out_file)


def _write_diagnosis(result: Any, fmt: ReportFormat, out_file: Path | None) -> None:
    from mlsleuth.report import render

    text = render(result, fmt.value)
    source = getattr(result, "runbook_source", "")  # a diagnosis's; replay results have no runbook
    if source:
        err.print(f"mlsleuth: runbook from the override {source}", markup=False, highlight=False, soft_wrap=True)
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
    import time

    # The one command that reaches into mlsleuth.testing: the demo world is a public fixture.
    from mlsleuth.testing import build_demo

    t0 = time.perf_counter()
    with err.status("building the demo week (training data, model, 7 days of requests, labels, events), "
                    "ingesting it and diagnosing it"):
        result = build_demo(folder, seed=seed)
    out.print(f"demo case written to {result.case_dir} and ingested into the store {result.store_dir}")
    status(store=result.store_dir, fmt=OutFormat.table)
    d = result.diagnosis
    out.print(f"\nverdict: {d.verdict.value.upper()}", style="bold red" if d.top else "bold green")
    if d.top is not None:
        h = d.top
        onset = h.onset.strftime("%a %Y-%m-%d %H:%M UTC") if h.onset else "no single start"
        out.print(f"most likely cause: {h.cause.value} (confidence {h.confidence:.2f}), onset {onset}",
                  markup=False, highlight=False)
        for e in h.evidence[:8]:
            out.print(f"  - {e}", markup=False, highlight=False)
        out.print(f"next: {h.next_steps[0]}" if h.next_steps else "", markup=False, highlight=False)
    out.print(f"\nreport: {result.report}   ({time.perf_counter() - t0:.1f} s)", markup=False, highlight=False)
    prog = _program()
    out.print(f"try: {prog} diagnose {result.case_dir} --format md", markup=False, highlight=False, soft_wrap=True)
    # A read token made up for this store: the dashboard needs one, and the demo has no secrets to guard.
    token = f"demo-{secrets.token_urlsafe(8)}"
    out.print(f"dashboard: MLSLEUTH_TOKENS={token}:read {prog} serve --store {result.store_dir}\n"
              f"           then open http://127.0.0.1:8000/login and enter the token {token}", markup=False,
              highlight=False, soft_wrap=True)


def _program() -> str:
    """How the user ran mlsleuth: ``mlsleuth`` when that is on PATH, else the script's path (``.venv/bin/mlsleuth``)."""
    argv0 = Path(sys.argv[0])
    on_path = shutil.which("mlsleuth")
    if argv0.name != "mlsleuth" or (on_path is not None and Path(on_path).resolve() == argv0.resolve()):
        return "mlsleuth"
    return os.path.relpath(argv0) if argv0.is_absolute() else str(argv0)


# --------------------------------------------------------------------------- fix and verify: replay, skew, compare


class TrafficDesign(StrEnum):
    """How ``compare`` reads the two versions' traffic."""

    SPLIT = "split"
    SHADOW = "shadow"


ReplayLogOpt = Annotated[Path | None, typer.Option("--log", help="The prediction log (Parquet file/folder, CSV, "
                                                   "JSONL); instead of --store.")]
ReplayStoreOpt = Annotated[Path | None, typer.Option("--store", envvar="MLSLEUTH_STORE",
                                                     help="Read requests from this store, a folder or a URL (env "
                                                          "MLSLEUTH_STORE; default ./.mlsleuth) when no --log is "
                                                          "given.")]
ModelNameOpt = Annotated[str | None, typer.Option("--model-name", help="Only requests of this model.")]
SinceOpt = Annotated[str | None, typer.Option(help="Only requests at or after this time (ISO-8601).")]
UntilOpt = Annotated[str | None, typer.Option(help="Only requests before this time (ISO-8601).")]
SegmentOpt = Annotated[list[str] | None, typer.Option("--segment", metavar="COL=VAL",
                                                      help="Only requests with column=value; repeat (values of one "
                                                           "column are alternatives).")]
KeepPrefixOpt = Annotated[bool, typer.Option("--keep-input-prefix", help="Give the pipeline the input.* columns "
                                             "with their prefix (code written against the log's names).")]
LabelsOpt = Annotated[Path | None, typer.Option(help="Labels: request_id, label[, label_ts].")]
ThresholdOpt = Annotated[float | None, typer.Option(help="Decision threshold on scores (default: inferred from the "
                                                    "logged score/prediction pairs, else 0.5).")]
FormatOpt = Annotated[ReportFormat, typer.Option("--format", help="json, md or html")]
OutOpt = Annotated[Path | None, typer.Option("--out", help="Write here instead of standard output.")]


def _requests(log: Path | None, store: Path | None, engine: EngineName | None = None,
              spark_master: str | None = None) -> Any:
    """The log file's validated rows, or the store to read them from (on the engine chosen)."""
    from mlsleuth.replay import read_checked
    from mlsleuth.schema import DataKind

    if log is not None:
        return read_checked(log, DataKind.LOG)
    return open_store_from_options(store or DEFAULT_STORE, engine, spark_master)


def _selection(base: Any, *, since: str | None, until: str | None, segment: list[str] | None,
               model_name: str | None, request_ids: Path | None = None) -> Any:
    """``base`` with the criteria given on the command line replacing its own."""
    from mlsleuth.replay import parse_segments, read_request_ids

    changes: dict[str, Any] = {}
    if since is not None:
        changes["since"] = _parse_ts(since, "--since")
    if until is not None:
        changes["until"] = _parse_ts(until, "--until")
    if segment:
        changes["segments"] = parse_segments(segment)
    if model_name is not None:
        changes["model"] = model_name
    if request_ids is not None:
        changes["request_ids"] = read_request_ids(request_ids)
    return base.replace(**changes) if changes else base


def _emit(result: Any, fmt: ReportFormat, out_file: Path | None, headline: str) -> None:
    from mlsleuth.report import render

    text = render(result, fmt.value)
    source = getattr(result, "runbook_source", "")  # a diagnosis's; replay results have no runbook
    if source:
        err.print(f"mlsleuth: runbook from the override {source}", markup=False, highlight=False, soft_wrap=True)
    if out_file is not None:
        out_file.write_text(text, encoding="utf-8")
        err.print(f"{headline}: report written to {out_file}", markup=False, highlight=False, soft_wrap=True)
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


@app.command()
@_friendly
def replay(
    log: ReplayLogOpt = None,
    store: ReplayStoreOpt = None,
    engine: EngineOpt = None,
    spark_master: SparkMasterOpt = None,
    model_name: ModelNameOpt = None,
    labels: LabelsOpt = None,
    model: Annotated[str | None, typer.Option(help="The (fixed) model: a joblib/pickle file, a module:function "
                                              "entry point or an http(s):// endpoint.")] = None,
    pipeline: Annotated[str | None, typer.Option(help="The (fixed) feature pipeline as module:function or "
                                                 "file.py:function, recomputing features from input.*.")] = None,
    keep_input_prefix: KeepPrefixOpt = False,
    since: SinceOpt = None,
    until: UntilOpt = None,
    segment: SegmentOpt = None,
    request_ids: Annotated[Path | None, typer.Option(help="Only these requests: a text file of one id per line, "
                                                     "or a table with a request_id column.")] = None,
    diagnosis: Annotated[Path | None, typer.Option(help="A diagnosis JSON (mlsleuth diagnose --format json): "
                                                   "replay its hypothesis's affected requests.")] = None,
    hypothesis: Annotated[int, typer.Option(help="Which hypothesis of --diagnosis (1 = most likely).")] = 1,
    threshold: ThresholdOpt = None,
    verify: Annotated[bool, typer.Option("--verify", help="Judge the fix: replay the incident window from --onset "
                                         "and compare with the baseline before it.")] = False,
    onset: Annotated[str | None, typer.Option(help="With --verify: when the incident started (default: the "
                                              "--diagnosis hypothesis's onset).")] = None,
    baseline: Annotated[str, typer.Option(help="With --verify: length of the baseline window before the onset "
                                          "(e.g. 7d, 24h).")] = "7d",
    tolerance_rel: Annotated[float, typer.Option(help="With --verify: allowed relative deviation from the "
                                                 "baseline.")] = 0.1,
    tolerance_abs: Annotated[float, typer.Option(help="With --verify: floor of the allowed deviation (a rate of "
                                                 "0.002 = 0.2 points).")] = 0.002,
    z: Annotated[float, typer.Option("--z", help="With --verify: sampling-noise allowance in standard "
                                     "errors.")] = 2.576,
    fmt: FormatOpt = ReportFormat.json,
    out_file: OutOpt = None,
) -> None:
    """Replay logged requests through a fixed pipeline and/or model and compare with what was logged.

    With --verify, replay the incident window (from --onset) and judge the fix against the
    baseline before the onset: the verdict (pass, fail or inconclusive) is in the output and the
    exit status is 0 either way.

    \b
    Examples:
      mlsleuth replay --log log.parquet --model model.joblib --since 2026-03-06T18:00:00Z --segment region=EU
      mlsleuth replay --log log.parquet --labels labels.parquet --model model.joblib \\
          --pipeline fixes/features.py:compute --verify --onset 2026-03-06T18:00:00Z --baseline 4d
      mlsleuth replay --store .mlsleuth --diagnosis diag.json --model model.joblib \\
          --pipeline fixes.features:compute --verify --format md --out verify.md
    """
    from mlsleuth.errors import InputError
    from mlsleuth.replay import Selection, Tolerance, load_pipeline, read_checked, read_hypothesis
    from mlsleuth.replay import replay as run_replay
    from mlsleuth.replay import verify as run_verify
    from mlsleuth.schema import DataKind

    if model is None and pipeline is None:
        raise InputError("nothing to replay through: pass --model SPEC, --pipeline SPEC, or both")
    hyp = read_hypothesis(diagnosis, hypothesis) if diagnosis is not None else None
    sel = _selection(Selection.from_hypothesis(hyp) if hyp is not None else Selection(), since=since, until=until,
                     segment=segment, model_name=model_name, request_ids=request_ids)
    if not verify and onset is not None:
        raise InputError("--onset applies only with --verify")
    if verify:
        if model is None:
            raise InputError("--verify scores the replayed requests, so it needs --model SPEC (the unchanged model "
                             "when the fix is in the pipeline)")
        if since is not None:
            raise InputError("--since does not apply with --verify: the incident window starts at --onset")
        start = _parse_ts(onset, "--onset") if onset is not None else (hyp or {}).get("onset")
        if start is None:
            raise InputError("--verify needs --onset TS, or --diagnosis whose hypothesis has an onset")
    source = _requests(log, store, engine, spark_master)
    lab = read_checked(labels, DataKind.LABELS) if labels is not None else None
    pipe = load_pipeline(pipeline, keep_prefix=keep_input_prefix) if pipeline is not None else None
    result: Any
    if verify:
        assert model is not None
        tol = Tolerance(relative=tolerance_rel, absolute=tolerance_abs, z=z)
        result = run_verify(source, onset=start, model=model, pipeline=pipe, until=sel.until, baseline=baseline,
                            selection=sel, labels=lab, threshold=threshold, tolerance=tol)
        headline = result.verdict.value
    else:
        result = run_replay(source, model=model, pipeline=pipe, selection=sel, labels=lab, threshold=threshold)
        headline = f"{result.n:,} requests replayed"
    _emit(result, fmt, out_file, headline)


@app.command()
@_friendly
def skew(
    log: ReplayLogOpt = None,
    store: ReplayStoreOpt = None,
    engine: EngineOpt = None,
    spark_master: SparkMasterOpt = None,
    model_name: ModelNameOpt = None,
    pipeline: Annotated[str | None, typer.Option(help="The training feature code as module:function or "
                                                 "file.py:function: recompute features from input.*.")] = None,
    keep_input_prefix: KeepPrefixOpt = False,
    reference: Annotated[Path | None, typer.Option(help="Training data, for distribution statistics of served "
                                                   "and recomputed features (with --pipeline).")] = None,
    offline: Annotated[Path | None, typer.Option(help="An offline feature table to compare with instead of "
                                                 "--pipeline, one row per key.")] = None,
    on: Annotated[str | None, typer.Option(help="With --offline: the log's key column (default request_id).")] = None,
    offline_on: Annotated[str | None, typer.Option(help="With --offline: the table's key column (default: --on "
                                                   "without its input. prefix).")] = None,
    features: Annotated[list[str] | None, typer.Option("--features", metavar="FEATURE",
                                                       help="Only these features; repeat or separate with "
                                                            "commas.")] = None,
    rtol: Annotated[float, typer.Option(help="Relative tolerance of a match.")] = 1e-6,
    atol: Annotated[float, typer.Option(help="Absolute tolerance of a match.")] = 1e-9,
    since: SinceOpt = None,
    until: UntilOpt = None,
    segment: SegmentOpt = None,
    fmt: FormatOpt = ReportFormat.json,
    out_file: OutOpt = None,
) -> None:
    """Training-serving skew: compare served features with the training code's, request by request.

    With --pipeline, the training feature code recomputes each request's features from its logged
    input.* columns; with --offline, an offline feature table is joined on a key. Any difference
    beyond --rtol/--atol is a mismatch.

    \b
    Examples:
      mlsleuth skew --log log.parquet --pipeline training.features:compute --reference train.parquet
      mlsleuth skew --store .mlsleuth --pipeline features.py:compute --since 2026-03-06 --format md
      mlsleuth skew --log log.parquet --offline snapshot.parquet --on input.customer_id --offline-on customer_id
    """
    from mlsleuth.errors import InputError
    from mlsleuth.replay import Selection, compare_offline, load_pipeline, read_checked, skew_check
    from mlsleuth.schema import DataKind, read_table

    if (pipeline is None) == (offline is None):
        raise InputError("pass --pipeline SPEC (recompute features) or --offline PATH (join a feature table), "
                         "exactly one")
    if offline is None and (on is not None or offline_on is not None):
        raise InputError("--on and --offline-on apply only with --offline")
    if offline is not None and reference is not None:
        raise InputError("--reference applies only with --pipeline")
    sel = _selection(Selection(), since=since, until=until, segment=segment, model_name=model_name)
    wanted = [f.strip() for item in features or [] for f in item.split(",") if f.strip()] or None
    source = _requests(log, store, engine, spark_master)
    if offline is not None:
        result = compare_offline(source, read_table(offline), on=on or "request_id", offline_on=offline_on,
                                 selection=sel, features=wanted, rtol=rtol, atol=atol)
    else:
        assert pipeline is not None
        ref = read_checked(reference, DataKind.REFERENCE) if reference is not None else None
        result = skew_check(source, load_pipeline(pipeline, keep_prefix=keep_input_prefix), selection=sel,
                            reference=ref, features=wanted, rtol=rtol, atol=atol)
    _emit(result, fmt, out_file, f"{len(result.skewed)} of {len(result.features)} features skewed")


@app.command()
@_friendly
def compare(
    log: ReplayLogOpt = None,
    store: ReplayStoreOpt = None,
    engine: EngineOpt = None,
    spark_master: SparkMasterOpt = None,
    model_name: ModelNameOpt = None,
    a: Annotated[str | None, typer.Option("--a", help="Version A: a value of --by (its logged requests and "
                                          "scores); with --a-model, the name of model A.")] = None,
    b: Annotated[str | None, typer.Option("--b", help="Version B, as --a.")] = None,
    by: Annotated[str, typer.Option(help="The column holding version names.")] = "model_version",
    a_model: Annotated[str | None, typer.Option("--a-model", help="Score side A with this model (joblib/pickle, "
                                                "module:function or URL) instead of logged scores.")] = None,
    b_model: Annotated[str | None, typer.Option("--b-model", help="Score side B with this model, as "
                                                "--a-model.")] = None,
    design: Annotated[TrafficDesign | None, typer.Option(help="split (A/B traffic) or shadow (both versions "
                                                         "scored the same requests); default: detected.")] = None,
    labels: LabelsOpt = None,
    threshold: ThresholdOpt = None,
    alpha: Annotated[float, typer.Option(help="Significance level of the tests.")] = 0.05,
    power: Annotated[float, typer.Option(help="Target power for the requests-needed calculation.")] = 0.8,
    min_effect: Annotated[float | None, typer.Option(help="Smallest absolute difference of a rate worth "
                                                     "detecting, e.g. 0.01 (default: the observed one).")] = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    segment: SegmentOpt = None,
    fmt: FormatOpt = ReportFormat.json,
    out_file: OutOpt = None,
) -> None:
    """Compare two model versions: positive rate, FPR and TPR with tests, power and per-segment results.

    Versions come from the log (--a/--b name values of --by), or from models that score the
    logged requests again (--a-model/--b-model). The verdict is significant, no_difference or
    underpowered (with how many more requests a test needs).

    \b
    Examples:
      mlsleuth compare --log log.parquet --labels labels.parquet --a v12 --b v13
      mlsleuth compare --store .mlsleuth --a v12 --b challenger --b-model challenger.joblib --format md
      mlsleuth compare --log log.parquet --a v12 --b v13 --design split --min-effect 0.01 --segment region=EU
    """
    from mlsleuth.errors import InputError
    from mlsleuth.replay import Design, Selection, load_runner, read_checked
    from mlsleuth.replay import compare as run_compare
    from mlsleuth.schema import DataKind

    if a is None and a_model is None:
        raise InputError("side A is missing: pass --a VERSION or --a-model SPEC")
    if b is None and b_model is None:
        raise InputError("side B is missing: pass --b VERSION or --b-model SPEC")
    sel = _selection(Selection(), since=since, until=until, segment=segment, model_name=model_name)
    source = _requests(log, store, engine, spark_master)
    lab = read_checked(labels, DataKind.LABELS) if labels is not None else None
    side_a: Any = load_runner(a_model) if a_model is not None else a
    side_b: Any = load_runner(b_model) if b_model is not None else b
    result = run_compare(source, a=side_a, b=side_b, by=by, selection=sel, labels=lab,
                         design=None if design is None else Design(design.value), threshold=threshold, alpha=alpha,
                         power=power, min_effect=min_effect,
                         names=(a if a_model is not None else None, b if b_model is not None else None))
    _emit(result, fmt, out_file, result.verdict.value)


# ------------------------------------------------------------------------------------------ monitor, profile


class MonitorFormat(StrEnum):
    """How ``monitor`` prints its findings."""

    table = "table"
    json = "json"
    html = "html"


def _stored_or_built(reference: Path | None, store: Any, model: str | None) -> Any:
    """A stored reference: ``--reference`` (a reference.json or reference data) or the store's profile of the model."""
    from mlsleuth.monitors import build_reference, load_reference
    from mlsleuth.store import RemoteStore

    if reference is None:
        if isinstance(store, RemoteStore):  # the profiles are small JSON files: read a copy
            import tempfile

            local = Path(tempfile.mkdtemp(prefix="mlsleuth-profiles-"))
            store.download("profiles", local / "profiles")
            return load_reference(local, model)
        return load_reference(store.path, model)
    if reference.is_dir() or reference.name.endswith("reference.json"):
        return load_reference(reference, model)
    return build_reference(reference)


@app.command()
@_friendly
def profile(
    path: Annotated[Path, typer.Argument(help="Reference (training) data: Parquet, CSV or JSON Lines.")],
    model: Annotated[str, typer.Option(help="The model the reference belongs to.")],
    store: StoreOpt = DEFAULT_STORE,
    version: Annotated[str | None, typer.Option(help="A label for this reference (default: the file name).")] = None,
    engine: EngineOpt = None,
    spark_master: SparkMasterOpt = None,
) -> None:
    """Profile reference data once and keep it in the store (profiles/MODEL/reference.json; older ones in history/).

    Example: mlsleuth profile train.parquet --model fraud
    """
    from mlsleuth.monitors import build_reference, save_reference
    from mlsleuth.store import LocalStore

    root = LocalStore.init(store, engine=None if engine is None else engine.value, spark_master=spark_master).path
    ref = build_reference(path, version=version or "")
    saved = save_reference(root, model, ref)
    out.print(f"profiled {ref.profile.rows:,} reference rows, {len(ref.profile)} columns, "
              f"{sum(len(v) for v in ref.segments.values())} segment values -> {saved}", markup=False,
              highlight=False)


@app.command()
@_friendly
def monitor(
    store: ReadStoreOpt = DEFAULT_STORE,
    model: Annotated[str | None, typer.Option(help="Only this model's requests (and its stored reference).")] = None,
    reference: Annotated[Path | None, typer.Option(
        help="Reference data or a stored reference.json (default: the store's profile of --model).")] = None,
    since: Annotated[str | None, typer.Option(help="Only requests at or after this time (ISO-8601).")] = None,
    until: Annotated[str | None, typer.Option(help="Only requests before this time (ISO-8601).")] = None,
    window: Annotated[str, typer.Option(help="Window size: 15min, 1h, 1d, ...")] = "1d",
    segment: Annotated[list[str] | None, typer.Option(help="A segment column (repeatable), e.g. region.")] = None,
    fmt: Annotated[MonitorFormat, typer.Option("--format", help="table, json or html")] = MonitorFormat.table,
    engine: EngineOpt = None,
    spark_master: SparkMasterOpt = None,
) -> None:
    """Run every monitor (drift, schema, quality, volume, freshness, predictions, performance, serving) per window.

    Examples: mlsleuth monitor --model fraud --window 1h --segment region;
    mlsleuth monitor --reference train.parquet --since 2026-03-05 --format json
    """
    from mlsleuth.monitors import run_monitors
    from mlsleuth.report import monitor_html, monitor_json, monitor_table

    s = open_store_from_options(store, engine, spark_master)
    ref = _stored_or_built(reference, s, model)
    report = run_monitors(s, ref, window=window, segment=tuple(segment or ()), model=model,
                          since=_parse_ts(since, "--since"), until=_parse_ts(until, "--until"))
    if fmt is MonitorFormat.json:
        sys.stdout.write(monitor_json(report))
        return
    if fmt is MonitorFormat.html:
        sys.stdout.write(monitor_html(report))
        return
    out.print(monitor_table(report))
    for name, reason in report.skipped:
        out.print(f"skipped {name}: {reason}", markup=False, highlight=False)


# --------------------------------------------------------------------------- the service


@app.command()
@_friendly
def serve(
    store: Annotated[Path | None, typer.Option("--store", envvar="MLSLEUTH_STORE",
                                               help="The store folder (env MLSLEUTH_STORE; default: the config's "
                                                    "store, else ./.mlsleuth).")] = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    config: Annotated[Path | None, typer.Option("--config", help="Server config (TOML): tokens, limits, alert "
                                                                 "rules, webhooks.")] = None,
    demo: Annotated[bool, typer.Option("--demo", help="Stream the demo week (the seed's incident) into the "
                                                      "server in accelerated time, into a fresh store unless "
                                                      "--store.")] = False,
    demo_minutes: Annotated[float, typer.Option(help="Wall-clock minutes the demo week takes.")] = 3.0,
    demo_rows: Annotated[int, typer.Option(help="Requests in the demo week.")] = 100_000,
    engine: EngineOpt = None,
    spark_master: SparkMasterOpt = None,
) -> None:
    """Serve the ingest and query API, the dashboard, alerts and /metrics (needs the server extra).

    Tokens come from the config's [tokens] table and from MLSLEUTH_TOKENS="tokA:read,tokB:write".
    Example: MLSLEUTH_TOKENS=s3cret:write mlsleuth serve --store ./monitoring --port 8000
    """
    from mlsleuth.server import load_config
    from mlsleuth.server import serve as run_server

    name = None if engine is None else engine.value
    if demo:
        _serve_demo(config, store, host, port, demo_minutes, demo_rows, name, spark_master)
        return
    cfg = load_config(config, store=store, engine=name, spark_master=spark_master)
    if not cfg.tokens:
        err.print("mlsleuth: warning: no tokens configured (MLSLEUTH_TOKENS or [tokens]); every route but /health "
                  "will answer 401", markup=False, highlight=False)
    err.print(f"mlsleuth: serving {cfg.store} on http://{host}:{port} ({len(cfg.rules)} alert rules"
              f"{', engine ' + cfg.engine.value if cfg.engine else ''})",
              markup=False, highlight=False)
    run_server(cfg, host=host, port=port)


def _diagnosis_config(path: Path | None) -> ModelConfig | None:
    """The model config at ``path``, its ``[thresholds]`` checked now so that an error names the file."""
    from mlsleuth.diagnosis import Thresholds
    from mlsleuth.schema import ModelConfig

    if path is None:
        return None
    cfg = ModelConfig.from_toml(path)
    Thresholds.from_mapping(cfg.thresholds, path=path)
    return cfg


def _serve_demo(config: Path | None, store: Path | None, host: str, port: int, minutes: float, rows: int,
                engine: str | None = None, spark_master: str | None = None) -> None:
    """``serve --demo``: a fresh store, a write token, the demo's alert rule, and the week streamed in."""
    import secrets
    import tempfile
    import threading

    from mlsleuth.server import demo_config, load_config, stream_week
    from mlsleuth.server import serve as run_server
    from mlsleuth.testing import demo_case

    token = secrets.token_urlsafe(16)
    cfg = demo_config(load_config(config, store=store or Path(tempfile.mkdtemp(prefix="mlsleuth-demo-")),
                                  engine=engine, spark_master=spark_master), token)
    with err.status(f"building the demo week ({rows:,} requests)"):
        case = demo_case(0, rows=rows)
    steps = 7 * 24
    out.print(f"dashboard: http://{host}:{port}/login   token: {token}   (store {cfg.store})", markup=False,
              highlight=False)
    out.print(f"streaming the demo week in {minutes:g} min: watch the incident open on Friday evening (incidents "
              "page), then follow it to its diagnosis", markup=False, highlight=False)

    def progress(clock: object, sent: int) -> None:
        if getattr(clock, "hour", 1) == 0:
            err.print(f"mlsleuth demo: streamed up to {clock:%a %Y-%m-%d} ({sent:,} requests)", markup=False,
                      highlight=False)

    thread = threading.Thread(target=stream_week, daemon=True, args=(f"http://{host}:{port}", token), kwargs={
        "model": "fraud", "log": case.log, "reference": case.reference, "labels": case.labels,
        "events": case.events or (), "lineage": case.lineage, "seconds_per_step": 60.0 * minutes / steps,
        "on_step": progress})
    thread.start()
    run_server(cfg, host=host, port=port, log_level="warning")


#: Third-party warnings the command line hides, each by its category and the start of its message: they say
#: nothing a user of mlsleuth can act on. Every other warning is shown as Python shows it.
_QUIET_WARNINGS: tuple[tuple[type[Warning], str], ...] = (
    # PySpark 4 on pandas 3: mlsleuth hands Spark Arrow tables, not pandas frames.
    (FutureWarning, "PySpark does not yet fully support pandas"),
)


def _quiet_known_warnings() -> None:
    """Hide the named third-party warnings of ``_QUIET_WARNINGS``, and nothing else."""
    import warnings

    for category, message in _QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=re.escape(message), category=category)


def main() -> None:
    """Entry point of the ``mlsleuth`` console script."""
    _quiet_known_warnings()
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
