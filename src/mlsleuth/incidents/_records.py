"""An incident: one root cause over time, with its status and the history of what the diagnosis said."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mlsleuth.diagnosis import Cause, Hypothesis
from mlsleuth.schema import parse_timestamp

__all__ = ["Incident", "IncidentCause", "IncidentStatus", "IncidentUpdate", "UpdateKind"]


class IncidentStatus(enum.Enum):
    """Where an incident stands: open until someone acknowledges it or its metrics recover."""

    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class UpdateKind(enum.Enum):
    """What happened to an incident at one point of its history."""

    OPENED = "opened"
    UPDATED = "updated"  # the same cause, seen again (more data, late labels)
    CAUSE_CHANGED = "cause_changed"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.isoformat()


def _time(v: Any) -> datetime | None:
    return None if v is None else parse_timestamp(v)


@dataclass(frozen=True)
class IncidentCause:
    """What the diagnosis names as an incident's root cause (its top hypothesis, in short)."""

    cause: Cause
    confidence: float
    onset: datetime | None
    features: tuple[str, ...] = ()
    inputs: tuple[str, ...] = ()
    segments: tuple[Mapping[str, str], ...] = ()
    events: tuple[str, ...] = ()
    first_step: str = ""

    @classmethod
    def of(cls, h: Hypothesis) -> IncidentCause:
        """The short form of a hypothesis."""
        return cls(h.cause, h.confidence, h.onset, h.features, h.inputs, h.segments, h.events,
                   h.next_steps[0] if h.next_steps else "")

    @property
    def culprits(self) -> frozenset[str]:
        """The columns it blames."""
        return frozenset(self.features) | frozenset(self.inputs)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"cause": self.cause.value, "confidence": self.confidence, "onset": _iso(self.onset),
                "features": list(self.features), "inputs": list(self.inputs),
                "segments": [dict(s) for s in self.segments], "events": list(self.events),
                "first_step": self.first_step}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> IncidentCause:
        """Inverse of :meth:`to_dict`."""
        return cls(Cause(d["cause"]), float(d["confidence"]), _time(d.get("onset")), tuple(d.get("features", ())),
                   tuple(d.get("inputs", ())), tuple(dict(s) for s in d.get("segments", ())),
                   tuple(d.get("events", ())), str(d.get("first_step", "")))

    def sentence(self) -> str:
        """One line: cause, culprits, segment, event, onset."""
        parts = [self.cause.value.replace("_", " ")]
        if self.culprits:
            parts.append("in " + ", ".join([*self.features, *self.inputs][:3]))
        if self.segments:
            parts.append("for " + "; ".join(", ".join(f"{k}={v}" for k, v in s.items()) for s in self.segments))
        if self.events:
            parts.append("after event " + self.events[0])
        if self.onset is not None:
            parts.append(f"since {self.onset:%a %Y-%m-%d %H:%M} UTC")
        return " ".join(parts)


@dataclass(frozen=True)
class IncidentUpdate:
    """One entry of an incident's history: when (data time), what happened, and the cause named then."""

    at: datetime
    kind: UpdateKind
    cause: IncidentCause | None = None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"at": self.at.isoformat(), "kind": self.kind.value,
                "cause": self.cause.to_dict() if self.cause is not None else None, "note": self.note}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> IncidentUpdate:
        """Inverse of :meth:`to_dict`."""
        at = _time(d["at"])
        assert at is not None
        return cls(at, UpdateKind(d["kind"]), IncidentCause.from_dict(d["cause"]) if d.get("cause") else None,
                   str(d.get("note", "")))


@dataclass(frozen=True)
class Incident:
    """One root cause of one model, from when it opened to when it resolved.

    Times are data time (the model's requests' clock), so a replayed or delayed stream is judged by its own.

    Examples
    --------
    >>> from datetime import datetime, UTC
    >>> from mlsleuth.diagnosis import Cause
    >>> c = IncidentCause(Cause.SERVING_INFRASTRUCTURE, 0.9, datetime(2026, 3, 6, 18, tzinfo=UTC))
    >>> i = Incident.open("fraud", c, datetime(2026, 3, 6, 18, 20, tzinfo=UTC))
    >>> i.status.value, i.top.cause.value, len(i.history)
    ('open', 'serving_infrastructure', 1)
    """

    id: str
    model: str
    status: IncidentStatus
    opened_at: datetime
    updated_at: datetime
    top: IncidentCause
    resolved_at: datetime | None = None
    last_seen: datetime | None = None  # the last check that still showed it
    history: tuple[IncidentUpdate, ...] = field(default_factory=tuple)

    @classmethod
    def open(cls, model: str, cause: IncidentCause, at: datetime) -> Incident:
        """A new incident, opened at ``at`` (its id from the model, the opening time and the cause)."""
        ident = f"{at:%Y%m%dT%H%M%S}-{cause.cause.value}"
        return cls(ident, model, IncidentStatus.OPEN, at, at, cause, last_seen=at,
                   history=(IncidentUpdate(at, UpdateKind.OPENED, cause),))

    @property
    def is_active(self) -> bool:
        """Open or acknowledged: not resolved."""
        return self.status is not IncidentStatus.RESOLVED

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (what the store keeps and the API returns)."""
        return {"id": self.id, "model": self.model, "status": self.status.value, "opened_at": _iso(self.opened_at),
                "updated_at": _iso(self.updated_at), "resolved_at": _iso(self.resolved_at),
                "last_seen": _iso(self.last_seen), "top": self.top.to_dict(),
                "history": [u.to_dict() for u in self.history]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Incident:
        """Inverse of :meth:`to_dict`."""
        opened, updated = _time(d["opened_at"]), _time(d["updated_at"])
        assert opened is not None and updated is not None
        return cls(str(d["id"]), str(d["model"]), IncidentStatus(d["status"]), opened, updated,
                   IncidentCause.from_dict(d["top"]), _time(d.get("resolved_at")), _time(d.get("last_seen")),
                   tuple(IncidentUpdate.from_dict(u) for u in d.get("history", ())))
