"""Typed specs of generated cases: causes, their variants, the resolved plan, and the ground truth."""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

# The ground truth speaks the diagnosis's language: its causes and verdicts are the same enums.
from mlsleuth.diagnosis import Cause, Verdict
from mlsleuth.errors import ConfigError, ReadError
from mlsleuth.schema import parse_timestamp

__all__ = [
    "CaseSpec",
    "Cause",
    "DegradationKind",
    "IncidentSpec",
    "InfraFault",
    "LabelSpec",
    "Mode",
    "ModelChangeKind",
    "PipelineFault",
    "Progression",
    "ShiftKind",
    "SkewKind",
    "Truth",
    "UpstreamChange",
    "Variation",
    "Verdict",
    "modes_of",
    "read_truth",
]


class Progression(enum.Enum):
    """How an effect arrives: at once, or ramping up over days (then the truth has no single onset)."""

    SUDDEN = "sudden"
    GRADUAL = "gradual"


class UpstreamChange(enum.Enum):
    """What an upstream source changed (applied to ``input.*`` before the feature pipeline)."""

    SCALE = "scale"  #: a column's scale: avg_amount_30d multiplied by a factor (the demo: 0.7)
    UNITS = "units"  #: amounts arrive in cents instead of dollars
    SENTINEL = "sentinel"  #: a share of rows carry -1 for "unknown" (account age or 24 h count)
    CATEGORY_RENAMED = "category_renamed"  #: a category value renamed (merchant category, or GB -> UK)
    DEFINITION = "definition"  #: a column's definition changed (24 h count counts declines; avg becomes a sum)


class PipelineFault(enum.Enum):
    """What a silently failing feature pipeline writes for one feature (inputs unchanged)."""

    ZEROS = "zeros"
    NULLS = "nulls"
    CONSTANT = "constant"  #: the training median, for every row
    STALE = "stale"  #: a small frozen set of old values, repeating
    DROPPED_JOIN = "dropped_join"  #: a join dropped, so the feature takes the pipeline's default


class SkewKind(enum.Enum):
    """How serving computes a feature differently from training."""

    LOG_BASE = "log_base"  #: log_amount as log10(1 + amount) instead of ln(1 + amount)
    WINDOW = "window"  #: amount_to_avg_ratio over a 7-day average instead of the 30-day one
    UNITS = "units"  #: account_age_log from the age in hours instead of days


class ShiftKind(enum.Enum):
    """How the real population changes (no pipeline break; labels follow the true mechanism)."""

    #: a market launch: one region's traffic grows with brand-new, partly cross-border customers
    COUNTRY_MIX = "country_mix"
    MERCHANT_MIX = "merchant_mix"  #: a seasonal surge in travel and electronics purchases
    HIGHER_AMOUNTS = "higher_amounts"  #: transaction amounts rise (a price rise or a luxury sale)
    CAMPAIGN = "campaign"  #: a sign-up campaign brings new accounts into one channel (app by default)


class DegradationKind(enum.Enum):
    """How the fraud mechanism P(fraud | inputs) drifts while inputs and scores stay put."""

    FRAUD_ADAPTS = "fraud_adapts"  #: fraudsters mimic normal amounts on mobile and everyday merchants
    ACCOUNT_TAKEOVER = "account_takeover"  #: fraud moves to old, domestic accounts at night


class ModelChangeKind(enum.Enum):
    """How a newly deployed model version behaves differently."""

    MISCALIBRATED = "miscalibrated"  #: same ranking, scores shifted up (not recalibrated)
    BAD_TRAINING_DATA = "bad_training_data"  #: retrained on data with broken features: a different model
    THRESHOLD = "threshold"  #: same scores, a lower decision threshold


class InfraFault(enum.Enum):
    """What the serving layer does wrong."""

    LATENCY = "latency"  #: latency multiplied, a few timeouts
    ERRORS = "errors"  #: requests fail (score null, fail-open prediction 0, ``error`` set)
    FALLBACK = "fallback"  #: a constant default score when a dependency times out (``error`` set)


Mode = UpstreamChange | PipelineFault | SkewKind | ShiftKind | DegradationKind | ModelChangeKind | InfraFault

_MODES: Mapping[Cause, type[enum.Enum]] = {
    Cause.UPSTREAM_DATA_CHANGE: UpstreamChange,
    Cause.SILENT_PIPELINE_FAILURE: PipelineFault,
    Cause.TRAINING_SERVING_SKEW: SkewKind,
    Cause.DISTRIBUTION_SHIFT: ShiftKind,
    Cause.MODEL_DEGRADATION: DegradationKind,
    Cause.MODEL_CHANGE: ModelChangeKind,
    Cause.SERVING_INFRASTRUCTURE: InfraFault,
}


def modes_of(cause: Cause) -> tuple[Mode, ...]:
    """The variants (modes) a cause comes in.

    Examples
    --------
    >>> [m.value for m in modes_of(Cause.SERVING_INFRASTRUCTURE)]
    ['latency', 'errors', 'fallback']
    """
    return tuple(_MODES[cause])


#: Segment columns a variation may confine an incident to, with their values.
SEGMENT_VALUES: Mapping[str, tuple[str, ...]] = {
    "region": ("EU", "US", "APAC", "LATAM"),
    "channel": ("web", "app", "pos"),
}


@dataclass(frozen=True)
class Variation:
    """How a case varies around its cause; every field has a plain default.

    Parameters
    ----------
    mode
        The cause's variant (see :func:`modes_of`); ``None`` lets the seed choose.
    progression
        Sudden (a single onset) or gradual (a ramp over days; the truth's onset is then ``None``).
    segment
        ``(column, value)`` such as ``("region", "EU")`` to confine the incident to one segment;
        ``None`` for all traffic (or, for modes that are inherently local, the seed's choice).
    onset
        Pin the start of the effect (UTC); ``None`` lets the seed choose.
    decoy_events
        Add unrelated change events close to the onset, and a harmless pipeline release.
    harmless_drift
        Add a drift in an input the model does not use (session length, after a web redesign).
    labels, events, lineage, model
        Whether the case ships labels, change events, lineage and the model file.
    canary_share
        Model changes only: the share of traffic the new version serves (``None``: full rollout).
    from_start
        Training/serving skew only: present from the first request (onset ``None``), rather than
        from a serving deployment.

    Examples
    --------
    >>> v = Variation(mode=UpstreamChange.SCALE, segment=("region", "EU"))
    >>> v.progression.value
    'sudden'
    """

    mode: Mode | None = None
    progression: Progression = Progression.SUDDEN
    segment: tuple[str, str] | None = None
    onset: datetime | None = None
    decoy_events: bool = True
    harmless_drift: bool = False
    labels: bool = True
    events: bool = True
    lineage: bool = True
    model: bool = True
    canary_share: float | None = None
    from_start: bool = False

    def check(self, cause: Cause | None) -> None:
        """Raise :class:`ConfigError` when a field does not fit ``cause``."""
        if cause is None:
            if self.mode is not None or self.canary_share is not None or self.from_start:
                raise ConfigError("a healthy case (cause None) takes no mode, canary_share or from_start",
                                  column="variation")
            return
        if self.mode is not None and not isinstance(self.mode, _MODES[cause]):
            raise ConfigError(f"mode {self.mode!r} is not a variant of {cause.value}; expected one of "
                              f"{[m.value for m in modes_of(cause)]}", column="variation.mode")
        if self.segment is not None:
            col, value = self.segment
            if col not in SEGMENT_VALUES or value not in SEGMENT_VALUES[col]:
                raise ConfigError(f"expected a segment among {dict(SEGMENT_VALUES)}, got {self.segment!r}",
                                  column="variation.segment")
        if self.canary_share is not None:
            if cause is not Cause.MODEL_CHANGE:
                raise ConfigError(f"canary_share applies to model_change only, not {cause.value}",
                                  column="variation.canary_share")
            if not 0.0 < self.canary_share < 1.0:
                raise ConfigError(f"expected a share strictly between 0 and 1, got {self.canary_share}",
                                  column="variation.canary_share")
        if self.from_start and cause is not Cause.TRAINING_SERVING_SKEW:
            raise ConfigError(f"from_start applies to training_serving_skew only, not {cause.value}",
                              column="variation.from_start")
        if cause is Cause.MODEL_DEGRADATION and not self.labels:
            raise ConfigError("model_degradation is only visible in labels; it needs labels=True",
                              column="variation.labels")


@dataclass(frozen=True)
class LabelSpec:
    """When labels arrive.

    Each labelled request's label arrives ``min_delay``..``max_delay`` after it was served
    (uniformly); only labels that arrived by ``observed_until`` (default: the end of the log)
    are in the case, so the last days are partly labelled. ``coverage`` is the share of requests
    that ever get a label.
    """

    min_delay: timedelta = timedelta(days=1)
    max_delay: timedelta = timedelta(days=3)
    coverage: float = 1.0
    observed_until: datetime | None = None

    def __post_init__(self) -> None:
        if not timedelta(0) <= self.min_delay <= self.max_delay:
            raise ConfigError(f"expected 0 <= min_delay <= max_delay, got {self.min_delay} and {self.max_delay}",
                              column="labels.min_delay")
        if not 0.0 < self.coverage <= 1.0:
            raise ConfigError(f"expected a coverage in (0, 1], got {self.coverage}", column="labels.coverage")


@dataclass(frozen=True)
class IncidentSpec:
    """A resolved incident: everything the generator needs, nothing left to chance.

    Attributes
    ----------
    cause, mode, progression
        What happens and how it arrives.
    start
        When the effect begins (UTC); ``None``: from the first request.
    full
        When it reaches full strength (equal to ``start`` when sudden).
    segment
        ``(column, value)`` the incident is confined to, or ``None``.
    magnitude
        The mode's size: a factor (scale, amount, latency), a score shift, a rate or a threshold quantile.
    share
        The share of eligible traffic affected at full strength (sentinel share, error rate, canary share).
    feature, input
        The targeted feature or input, when the mode targets one.
    detail
        A mode-specific choice, e.g. ``"electronics->consumer_electronics"`` for a renamed category.
    event_lead
        How long before ``start`` the culprit change event is logged (``None``: no culprit event).
    """

    cause: Cause
    mode: Mode
    progression: Progression
    start: datetime | None
    full: datetime | None
    segment: tuple[str, str] | None
    magnitude: float
    share: float = 1.0
    feature: str | None = None
    input: str | None = None
    detail: str = ""
    event_lead: timedelta | None = None


@dataclass(frozen=True)
class CaseSpec:
    """The full plan of a case; :func:`build_case` turns it into data deterministically.

    Attributes
    ----------
    name
        A short name, e.g. ``"upstream_data_change-scale-s7"``.
    seed, world_seed
        The case's randomness, and the world's (which fixes the model and the reference).
    rows
        Requests in the week (a campaign adds some on top).
    start, days
        The log's first instant (UTC, midnight) and its length.
    incident
        The incident, or ``None`` for a healthy week.
    labels
        When labels arrive, or ``None`` for a case without labels.
    events, decoy_events, lineage, model
        What the case ships.
    harmless_drift_at
        When a harmless drift (session length, unused by the model) starts, or ``None``.
    pipeline_release_at
        When a harmless feature-pipeline release happens (a decoy), or ``None``.
    description
        One sentence for people.
    """

    name: str
    seed: int
    world_seed: int
    rows: int
    start: datetime
    days: int
    incident: IncidentSpec | None
    labels: LabelSpec | None
    events: bool
    decoy_events: bool
    lineage: bool
    model: bool
    harmless_drift_at: datetime | None
    pipeline_release_at: datetime | None
    description: str = ""

    @property
    def end(self) -> datetime:
        """The log's end (exclusive)."""
        return self.start + timedelta(days=self.days)


def _iso(ts: datetime | None) -> str | None:
    return None if ts is None else ts.isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Truth:
    """What really happened in a case, to score a diagnosis against.

    The contract fields (the diagnosis JSON of docs/contract.md) are ``verdict``, ``cause``, ``onset``, ``features``,
    ``inputs``, ``segments`` and ``events``; the rest help a lenient scorer.

    Attributes
    ----------
    verdict
        Incident or healthy.
    cause
        The cause, ``None`` when healthy.
    onset
        The single start of a sudden incident; ``None`` when gradual or present from the first request.
    features, inputs
        The culprit columns, most responsible first (inputs empty when inputs are intact).
    segments
        The affected segments as ``((column, value), ...)`` groups, empty when all traffic is affected.
    events
        Ids of the change events that caused it, most likely first.
    description
        One sentence for people.
    mode
        The cause's variant (``UpstreamChange.SCALE.value``...), ``None`` when healthy.
    effect_start, effect_full
        When the effect began (also for gradual ones) and reached full strength; ``None`` when from the start.
    """

    verdict: Verdict
    cause: Cause | None = None
    onset: datetime | None = None
    features: tuple[str, ...] = ()
    inputs: tuple[str, ...] = ()
    segments: tuple[tuple[tuple[str, str], ...], ...] = ()
    events: tuple[str, ...] = ()
    description: str = ""
    mode: str | None = None
    effect_start: datetime | None = None
    effect_full: datetime | None = None
    details: tuple[tuple[str, str], ...] = field(default=())

    @property
    def segment_dicts(self) -> list[dict[str, str]]:
        """The segments in the contract's form, ``[{"region": "EU"}]``."""
        return [dict(s) for s in self.segments]

    def to_dict(self) -> dict[str, Any]:
        """The truth in the contract's diagnosis shape (verdict + one hypothesis), plus extra fields."""
        out: dict[str, Any] = {"verdict": self.verdict.value, "hypotheses": []}
        if self.cause is not None:
            out["hypotheses"].append({
                "cause": self.cause.value,
                "onset": _iso(self.onset),
                "features": list(self.features),
                "inputs": list(self.inputs),
                "segments": self.segment_dicts,
                "events": list(self.events),
            })
        out["description"] = self.description
        out["truth"] = {"mode": self.mode, "effect_start": _iso(self.effect_start),
                        "effect_full": _iso(self.effect_full), **dict(self.details)}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, path: str | Path | None = None) -> Truth:
        """Read back what :meth:`to_dict` wrote.

        Raises
        ------
        ReadError
            When a field is missing or has the wrong form.
        """
        try:
            verdict = Verdict(data["verdict"])
            hyps = data.get("hypotheses") or []
            extra = dict(data.get("truth") or {})
            when = {k: None if extra.get(k) is None else parse_timestamp(extra[k])
                    for k in ("effect_start", "effect_full")}
            mode = extra.pop("mode", None)
            details = tuple(sorted((str(k), str(v)) for k, v in extra.items()
                                   if k not in ("effect_start", "effect_full")))
            if not hyps:
                return cls(verdict, description=str(data.get("description", "")), details=details)
            h = hyps[0]
            return cls(
                verdict=verdict,
                cause=Cause(h["cause"]),
                onset=None if h.get("onset") is None else parse_timestamp(h["onset"]),
                features=tuple(h.get("features") or ()),
                inputs=tuple(h.get("inputs") or ()),
                segments=tuple(tuple(sorted(s.items())) for s in h.get("segments") or ()),
                events=tuple(h.get("events") or ()),
                description=str(data.get("description", "")),
                mode=mode,
                effect_start=when["effect_start"],
                effect_full=when["effect_full"],
                details=details,
            )
        except (KeyError, ValueError, TypeError, AttributeError) as e:
            raise ReadError(f"expected a truth object as Truth.to_dict writes it: {e!r}", path=path) from e


def read_truth(path: str | Path) -> Truth:
    """Read a case's ``truth.json``.

    Raises
    ------
    ReadError
        When the file is missing or not a truth object.
    """
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReadError("file not found", path=p) from None
    except json.JSONDecodeError as e:
        raise ReadError(f"expected JSON: {e.msg}", path=p, line=e.lineno) from e
    if not isinstance(data, dict):
        raise ReadError(f"expected a JSON object, got {type(data).__name__}", path=p)
    return Truth.from_dict(data, path=p)
