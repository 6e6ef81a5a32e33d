"""Change events and lineage: typed records, JSON Lines / JSON readers, OpenLineage."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlsleuth.errors import ReadError

__all__ = [
    "EVENT_KINDS",
    "ChangeEvent",
    "Lineage",
    "parse_timestamp",
    "read_events",
    "read_lineage",
]

#: The kinds docs/contract.md names; any other word is accepted too.
EVENT_KINDS = ("deployment", "schema_change", "pipeline", "infrastructure", "config", "upstream", "data_backfill")


def parse_timestamp(value: object) -> datetime:
    """Parse an ISO-8601 timestamp (``Z`` or an offset; naive means UTC) into an aware UTC datetime.

    Raises
    ------
    ValueError
        When ``value`` is not an ISO-8601 timestamp.
    """
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        dt = datetime.fromisoformat(text)
    else:
        raise ValueError(f"expected an ISO-8601 timestamp string, got {value!r}")
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


@dataclass(frozen=True)
class ChangeEvent:
    """Something that changed: a deployment, a schema change, a pipeline run, ...

    Examples
    --------
    >>> e = ChangeEvent.from_mapping({"id": "ev-1", "ts": "2026-03-06T17:45:00Z", "kind": "deployment",
    ...                               "target": "model:fraud"})
    >>> e.target_kind, e.target_name
    ('model', 'fraud')
    """

    id: str
    ts: datetime
    kind: str
    target: str = ""
    description: str = ""
    attributes: tuple[tuple[str, str], ...] = ()

    @property
    def target_kind(self) -> str | None:
        """``model``, ``service``, ``source``, ``job``, ``feature``... or ``None`` for free text."""
        head, sep, _ = self.target.partition(":")
        return head if sep and head and " " not in head else None

    @property
    def target_name(self) -> str:
        """The target without its ``kind:`` prefix."""
        return self.target.partition(":")[2] if self.target_kind else self.target

    def to_dict(self) -> dict[str, Any]:
        """The event as JSON-ready data, in the contract's field names."""
        out: dict[str, Any] = {"id": self.id, "ts": self.ts.isoformat().replace("+00:00", "Z"), "kind": self.kind,
                               "target": self.target, "description": self.description}
        out.update(dict(self.attributes))
        return out

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, path: str | Path | None = None,
                     line: int | None = None) -> ChangeEvent:
        """Validate one event object; errors name the file, line and field."""
        for key in ("id", "ts", "kind"):
            if data.get(key) in (None, ""):
                raise ReadError(f"change event needs a non-empty {key!r}; got keys {sorted(data)}",
                                path=path, line=line, column=key)
        try:
            ts = parse_timestamp(data["ts"])
        except ValueError:
            raise ReadError(f"expected an ISO-8601 timestamp such as 2026-03-06T17:45:00Z, got {data['ts']!r}",
                            path=path, line=line, column="ts") from None
        extra = tuple(sorted((str(k), json.dumps(v) if not isinstance(v, str) else v)
                             for k, v in data.items() if k not in {"id", "ts", "kind", "target", "description"}))
        return cls(id=str(data["id"]), ts=ts, kind=str(data["kind"]), target=str(data.get("target") or ""),
                   description=str(data.get("description") or ""), attributes=extra)


@dataclass(frozen=True)
class Lineage:
    """Which columns or sources each column is computed from.

    Examples
    --------
    >>> lin = Lineage.from_mapping({"feature.ratio": ["input.amount", "input.avg"],
    ...                             "input.avg": ["source:warehouse.stats"]})
    >>> lin.sources("feature.ratio")
    ('source:warehouse.stats',)
    """

    edges: tuple[tuple[str, str], ...] = ()  # (child, parent)
    _parents: Mapping[str, tuple[str, ...]] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        parents: dict[str, list[str]] = {}
        for child, parent in self.edges:
            lst = parents.setdefault(child, [])
            if parent not in lst:
                lst.append(parent)
        object.__setattr__(self, "_parents", {k: tuple(v) for k, v in parents.items()})

    @classmethod
    def from_mapping(cls, data: Mapping[str, Iterable[str]], *, path: str | Path | None = None) -> Lineage:
        """Build lineage from the contract's JSON object ``{column: [parents...]}``."""
        edges: list[tuple[str, str]] = []
        for child, parents in data.items():
            if isinstance(parents, str) or not isinstance(parents, Iterable):
                raise ReadError(f"expected a list of parent columns or sources, got {parents!r}",
                                path=path, column=str(child))
            edges.extend((str(child), str(p)) for p in parents)
        return cls(tuple(edges))

    def merge(self, other: Lineage) -> Lineage:
        """Both lineages' edges, without repeats."""
        seen = dict.fromkeys(self.edges + other.edges)
        return Lineage(tuple(seen))

    def to_mapping(self) -> dict[str, list[str]]:
        """The contract's JSON form."""
        return {k: list(v) for k, v in self._parents.items()}

    def parents(self, column: str) -> tuple[str, ...]:
        """The direct parents of ``column``."""
        return self._parents.get(column, ())

    def ancestors(self, column: str) -> tuple[str, ...]:
        """Every column or source ``column`` depends on, nearest first (breadth-first)."""
        out: dict[str, None] = {}
        frontier = list(self.parents(column))
        while frontier:
            nxt: list[str] = []
            for p in frontier:
                if p not in out and p != column:
                    out[p] = None
                    nxt.extend(self.parents(p))
            frontier = nxt
        return tuple(out)

    def sources(self, column: str) -> tuple[str, ...]:
        """The ancestors of ``column`` that have no parents of their own (its ultimate sources)."""
        return tuple(a for a in self.ancestors(column) if not self.parents(a))

    def descendants(self, node: str) -> tuple[str, ...]:
        """Every column that depends on ``node`` (a column or a source), nearest first."""
        children: dict[str, list[str]] = {}
        for child, parent in self.edges:
            children.setdefault(parent, []).append(child)
        out: dict[str, None] = {}
        frontier = list(children.get(node, ()))
        while frontier:
            nxt: list[str] = []
            for c in frontier:
                if c not in out:
                    out[c] = None
                    nxt.extend(children.get(c, ()))
            frontier = nxt
        return tuple(out)


def _json_lines(path: Path) -> Iterator[tuple[int, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ReadError("file not found", path=path) from None
    except UnicodeDecodeError as e:
        raise ReadError(f"expected UTF-8 JSON Lines text: {e}", path=path) from e
    for i, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            yield i, json.loads(raw)
        except json.JSONDecodeError as e:
            raise ReadError(f"expected one JSON object per line: {e.msg}", path=path, line=i) from e


def _is_openlineage(obj: Mapping[str, Any]) -> bool:
    return "eventTime" in obj and "run" in obj and "job" in obj


def _ol_dataset_name(ds: Mapping[str, Any]) -> str:
    return str(ds.get("name") or ds.get("namespace") or "unknown")


def _openlineage_event(obj: Mapping[str, Any], *, path: Path, line: int) -> ChangeEvent:
    job = obj.get("job") or {}
    run = obj.get("run") or {}
    job_name = f"{job.get('namespace', '')}.{job.get('name', '')}".strip(".")
    outputs = [_ol_dataset_name(d) for d in obj.get("outputs") or []]
    inputs = [_ol_dataset_name(d) for d in obj.get("inputs") or []]
    state = str(obj.get("eventType") or "OTHER").upper()
    desc = f"OpenLineage {state} of job {job_name}"
    if inputs:
        desc += f" reading {', '.join(inputs)}"
    if outputs:
        desc += f" writing {', '.join(outputs)}"
    target = f"source:{outputs[0]}" if len(outputs) == 1 else f"job:{job_name}"
    attrs = {"openlineage_state": state, "job": job_name}
    if outputs:
        attrs["outputs"] = json.dumps(outputs)
    return ChangeEvent.from_mapping(
        {"id": f"{run.get('runId', 'run')}:{state.lower()}", "ts": obj.get("eventTime"), "kind": "pipeline",
         "target": target, "description": desc, **attrs}, path=path, line=line)


def _openlineage_edges(obj: Mapping[str, Any]) -> list[tuple[str, str]]:
    edges: list[tuple[str, str]] = []
    ins = [f"source:{_ol_dataset_name(d)}" for d in obj.get("inputs") or []]
    for out in obj.get("outputs") or []:
        out_name = f"source:{_ol_dataset_name(out)}"
        edges.extend((out_name, i) for i in ins)
        col_facet = ((out.get("facets") or {}).get("columnLineage") or {}).get("fields") or {}
        for field_name, spec in col_facet.items():
            for inf in spec.get("inputFields") or []:
                edges.append((f"{out_name}.{field_name}", f"source:{inf.get('name', '')}.{inf.get('field', '')}"))
            edges.append((f"{out_name}.{field_name}", out_name))
    return edges


def read_events(path: str | Path) -> tuple[ChangeEvent, ...]:
    """Read change events from JSON Lines: contract events or OpenLineage run events.

    OpenLineage ``START``/``COMPLETE``/``FAIL`` events (as Airflow, dbt and Spark emit them)
    become ``pipeline`` events whose target is the dataset they wrote.

    Raises
    ------
    ReadError
        Naming the file, line and field of the first bad event.
    """
    p = Path(path)
    out = []
    for line, obj in _json_lines(p):
        if not isinstance(obj, dict):
            raise ReadError(f"expected a JSON object, got {type(obj).__name__}", path=p, line=line)
        out.append(_openlineage_event(obj, path=p, line=line) if _is_openlineage(obj)
                   else ChangeEvent.from_mapping(obj, path=p, line=line))
    return tuple(sorted(out, key=lambda e: (e.ts, e.id)))


def read_lineage(path: str | Path) -> Lineage:
    """Read lineage: the contract's JSON object, or OpenLineage run events as JSON Lines.

    Raises
    ------
    ReadError
        When the file is neither, naming the file and the offending entry.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ReadError("file not found", path=p) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = None
    if isinstance(data, dict) and not _is_openlineage(data):
        return Lineage.from_mapping(data, path=p)
    edges: list[tuple[str, str]] = []
    for line, obj in _json_lines(p):
        if not isinstance(obj, dict) or not _is_openlineage(obj):
            raise ReadError("expected a JSON object {column: [parents]} or OpenLineage run events, one per line",
                            path=p, line=line)
        edges.extend(_openlineage_edges(obj))
    return Lineage(tuple(dict.fromkeys(edges)))
