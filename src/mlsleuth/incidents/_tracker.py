"""Incidents, not alerts: each check's diagnosis joins the open incident it explains, or opens one."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from mlsleuth.diagnosis import Diagnosis, Verdict, diagnose_store
from mlsleuth.errors import ConfigError
from mlsleuth.incidents._log import IncidentLog
from mlsleuth.incidents._records import Incident, IncidentCause, IncidentStatus, IncidentUpdate, UpdateKind
from mlsleuth.store import LocalStore, Store

__all__ = ["IncidentChange", "IncidentPolicy", "IncidentTracker"]


@dataclass(frozen=True)
class IncidentPolicy:
    """How checks become incidents.

    Parameters
    ----------
    lookback
        The span of traffic each check diagnoses, ending at the check's clock. Three days by default: the
        diagnosis takes the daily cycle out of a span of two days or more, and a shorter one would read
        the evening's usual latency or traffic mix as a change.
    join_hours
        A diagnosis joins an open incident of the same model when it names the same cause, blames a
        column the incident blames, names the same change event, or has an onset this close to its onset.
    resolve_after
        An incident resolves once its affected metric has been back near its level before the onset for
        this much data time, or no check has shown it for this long.
    recover_share
        "Back near": within this share of the change from the level before the onset.
    min_history
        A model is checked only once its requests span this much data time: with less, the diagnosis
        cannot take the daily cycle out, and a model's first evening would read as a change.
    """

    lookback: timedelta = timedelta(days=3)
    join_hours: float = 6.0
    resolve_after: timedelta = timedelta(hours=6)
    recover_share: float = 0.25
    min_history: timedelta = timedelta(days=2)

    def __post_init__(self) -> None:
        if self.lookback <= timedelta(0) or self.resolve_after < timedelta(0) or self.join_hours < 0:
            raise ConfigError(f"expected a positive lookback and non-negative join_hours and resolve_after, got "
                              f"{self.lookback}, {self.join_hours}, {self.resolve_after}", column="incidents")
        if self.min_history < timedelta(0):
            raise ConfigError(f"expected a non-negative min_history, got {self.min_history}", column="incidents")


@dataclass(frozen=True)
class IncidentChange:
    """Something a check did to an incident that its watchers should hear of (opened, cause changed, resolved)."""

    incident: Incident
    kind: UpdateKind
    previous: IncidentCause | None = None  # the cause it had before, for a cause change


class IncidentTracker:
    """Turns each check's diagnosis into incident changes, kept in an :class:`IncidentLog`.

    Parameters
    ----------
    log
        Where incidents are kept (a store's folder, or in memory).
    policy
        When a diagnosis joins an incident and when an incident resolves.

    Examples
    --------
    >>> tracker = IncidentTracker(IncidentLog(None))
    >>> tracker.log.all()
    []
    """

    def __init__(self, log: IncidentLog, policy: IncidentPolicy | None = None) -> None:
        self.log = log
        self.policy = policy or IncidentPolicy()

    def _same_root(self, a: IncidentCause, b: IncidentCause) -> bool:
        near = a.onset is not None and b.onset is not None and abs(a.onset - b.onset) <= timedelta(
            hours=self.policy.join_hours)
        return a.cause is b.cause or bool(a.culprits & b.culprits) or bool(set(a.events) & set(b.events)) or near

    def _explains(self, incident: Incident, cause: IncidentCause) -> bool:
        """Whether ``cause`` shares a root with what the incident has been, at any point of its history."""
        return any(self._same_root(c, cause) for c in (incident.top, *(u.cause for u in incident.history if u.cause)))

    def _already_resolved(self, model: str, cause: IncidentCause) -> bool:
        """A resolved incident whose change the trailing span still holds: not a new incident."""
        return any(not i.is_active and i.top.onset is not None and cause.onset is not None
                   and abs(i.top.onset - cause.onset) <= timedelta(hours=self.policy.join_hours)
                   and self._explains(i, cause) for i in self.log.all(model))

    def observe(self, model: str, diagnosis: Diagnosis, at: datetime) -> tuple[IncidentChange, ...]:
        """Fold one check's diagnosis (of ``model``'s traffic up to ``at``, data time) into the incidents.

        Returns the changes to notify: at most one opening or cause change, and the resolutions.
        """
        changes: list[IncidentChange] = []
        seen: set[str] = set()
        top = diagnosis.top if diagnosis.verdict is Verdict.INCIDENT else None
        if top is not None:
            cause = IncidentCause.of(top)
            match = next((i for i in self.log.active(model) if self._explains(i, cause)), None)
            if match is not None and self._recovered(diagnosis, match, at):
                changes.append(self._resolve(match, at, "its affected metric is back near its level before the onset"))
            elif match is not None:
                seen.add(match.id)
                change = self._update(match, cause, at)
                if change is not None:
                    changes.append(change)
            elif not self._already_resolved(model, cause):
                incident = Incident.open(model, cause, at)
                self.log.put(incident)
                seen.add(incident.id)
                changes.append(IncidentChange(incident, UpdateKind.OPENED))
        for incident in self.log.active(model):
            last = incident.last_seen or incident.updated_at
            if incident.id not in seen and at - last >= self.policy.resolve_after:
                changes.append(self._resolve(incident, at, f"not seen since {last:%Y-%m-%d %H:%M} UTC"))
        return tuple(changes)

    def _resolve(self, incident: Incident, at: datetime, why: str) -> IncidentChange:
        done = replace(incident, status=IncidentStatus.RESOLVED, resolved_at=at, updated_at=at,
                       history=(*incident.history, IncidentUpdate(at, UpdateKind.RESOLVED, note=why)))
        self.log.put(done)
        return IncidentChange(done, UpdateKind.RESOLVED)

    def _recovered(self, diagnosis: Diagnosis, incident: Incident, at: datetime) -> bool:
        """Whether the affected metric's last ``resolve_after`` is back near its level before the onset."""
        timeline = diagnosis.charts.timeline if diagnosis.charts is not None else None
        if timeline is None or not timeline.series or at - incident.opened_at < self.policy.resolve_after:
            return False
        s = timeline.series[0]
        k = max(1, math.ceil(self.policy.resolve_after.total_seconds() / timeline.window_seconds))
        recent = [v for v in s.values[-k:] if math.isfinite(v)]
        moved = s.after - s.before
        if not recent or not math.isfinite(moved) or moved == 0:
            return False
        return abs(sum(recent) / len(recent) - s.before) <= self.policy.recover_share * abs(moved)

    def _update(self, incident: Incident, cause: IncidentCause, at: datetime) -> IncidentChange | None:
        """The incident seen again: a new cause is a change to notify; new details go in its history quietly."""
        kind = UpdateKind.CAUSE_CHANGED if cause.cause is not incident.top.cause else UpdateKind.UPDATED
        same = replace(cause, confidence=incident.top.confidence) == incident.top
        history = incident.history if same else (*incident.history, IncidentUpdate(at, kind, cause))
        updated = replace(incident, top=cause, updated_at=incident.updated_at if same else at, last_seen=at,
                          history=history)
        self.log.put(updated)
        return IncidentChange(updated, kind, previous=incident.top) if kind is UpdateKind.CAUSE_CHANGED else None

    def acknowledge(self, model: str, ident: str, at: datetime, *, by: str = "") -> Incident:
        """Mark an incident acknowledged (it stays active until it resolves).

        Raises
        ------
        ConfigError
            When there is no such incident.
        """
        incident = self.log.get(model, ident)
        if incident is None:
            raise ConfigError(f"no incident {ident!r} of model {model!r}", column="incident")
        if incident.status is not IncidentStatus.OPEN:
            return incident
        done = replace(incident, status=IncidentStatus.ACKNOWLEDGED, updated_at=at,
                       history=(*incident.history, IncidentUpdate(at, UpdateKind.ACKNOWLEDGED, note=by)))
        self.log.put(done)
        return done

    def check(self, store: Store | str | Path, model: str, at: datetime, /, *, first_seen: datetime | None = None,
              **diagnose: Any) -> tuple[IncidentChange, ...]:
        """Diagnose ``model``'s traffic over the policy's lookback up to ``at`` and fold it in.

        While an incident is open the span reaches back to before its onset, so that a fault that lasts
        stays in view and a recovery shows against the level before it. ``diagnose`` passes on to
        :func:`~mlsleuth.diagnosis.diagnose_store` (reference, model, config); the first three are
        positional only, so that ``model=`` names the scoring model as it does there.

        A model whose requests span less than the policy's ``min_history`` up to ``at`` is not checked
        (nothing changes). ``first_seen`` is the model's first request, when the caller knows it
        already; else the store's status says.
        """
        if self.policy.min_history > timedelta(0):
            if first_seen is None:
                first_seen = _first_request(store, model)
            if first_seen is None or at - first_seen < self.policy.min_history:
                return ()
        since = at - self.policy.lookback
        onsets = [i.top.onset for i in self.log.active(model) if i.top.onset is not None]
        if onsets:  # keep the level before every open incident in view, to see it persist or recover
            since = min(since, min(onsets) - self.policy.lookback)
        d = diagnose_store(store, model_name=model, since=since, until=at + timedelta(microseconds=1), **diagnose)
        return self.observe(model, d, at)


def _first_request(store: Store | str | Path, model: str) -> datetime | None:
    """The model's first request in the store, ``None`` when it holds none."""
    st = LocalStore.open(store) if isinstance(store, str | Path) else store
    try:
        return st.status().model(model).first_ts
    except KeyError:
        return None
    finally:
        if st is not store:
            st.close()
