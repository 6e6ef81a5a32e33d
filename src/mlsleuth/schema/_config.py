"""Per-model configuration read from a TOML file, and duration parsing."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from mlsleuth.errors import ConfigError
from mlsleuth.schema._roles import Role

__all__ = ["ModelConfig", "parse_duration"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|hour|d|day|w|week)s?\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hour": 3600, "d": 86400, "day": 86400,
                 "w": 604800, "week": 604800}


def parse_duration(text: str | int | float | timedelta, *, field_name: str = "duration") -> timedelta:
    """Parse ``"15min"``, ``"1h"``, ``"7d"`` (or seconds as a number) into a timedelta.

    Examples
    --------
    >>> parse_duration("15min"), parse_duration("1h")
    (datetime.timedelta(seconds=900), datetime.timedelta(seconds=3600))
    """
    if isinstance(text, timedelta):
        return text
    if isinstance(text, int | float) and not isinstance(text, bool):
        if text <= 0:
            raise ConfigError(f"expected a positive duration, got {text!r}", column=field_name)
        return timedelta(seconds=float(text))
    m = _DURATION.match(str(text))
    if not m or float(m.group(1)) <= 0:
        raise ConfigError(
            f"expected a positive duration such as '15min', '1h' or '7d', got {text!r}", column=field_name
        )
    return timedelta(seconds=float(m.group(1)) * _UNIT_SECONDS[m.group(2).lower()])


@dataclass(frozen=True)
class ModelConfig:
    """Settings of one model that override what mlsleuth infers.

    A TOML file holds them; every key is optional::

        name = "fraud"
        positive_class = 1
        window = "1h"
        label_delay = "3d"
        segments = ["region", "channel"]
        fallback_score = 0.01

        [thresholds]
        min_change_z = 8.0

        [roles]
        txn_id = "request_id"
        event_time = "time"

    Parameters
    ----------
    name
        The model's name, when the file is for one model.
    roles
        Column name to :class:`Role`, overriding the roles names imply.
    segments
        Exactly these columns are segment attributes (``None``: infer them).
    positive_class
        The label and prediction value of the positive class of a binary classifier.
    window
        The default window of windowed analyses.
    label_delay
        How long labels usually take to arrive.
    fallback_score
        The score the serving layer returns in place of the model's when it cannot score (a default).
        Without it, a fallback is only a score served on rows that record an ``error``.
    thresholds
        Diagnosis thresholds that replace the defaults, by name (see
        :class:`~mlsleuth.diagnosis.Thresholds`; the diagnosis checks the names).
    """

    name: str | None = None
    roles: Mapping[str, Role] = field(default_factory=dict)
    segments: tuple[str, ...] | None = None
    positive_class: str | int | float | None = None
    window: timedelta = timedelta(hours=1)
    label_delay: timedelta | None = None
    fallback_score: float | None = None
    thresholds: Mapping[str, float] = field(default_factory=dict)

    def __hash__(self) -> int:
        return hash((self.name, tuple(sorted((k, v.value) for k, v in self.roles.items())), self.segments,
                     self.positive_class, self.window, self.label_delay, self.fallback_score,
                     tuple(sorted(self.thresholds.items()))))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, path: str | Path | None = None) -> ModelConfig:
        """Build a config from parsed TOML, naming the file and key of any bad value."""
        known = {"name", "roles", "segments", "positive_class", "window", "label_delay", "fallback_score",
                 "thresholds"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown keys {unknown}; expected some of {sorted(known)}", path=path)
        roles: dict[str, Role] = {}
        raw_roles = data.get("roles", {})
        if not isinstance(raw_roles, Mapping):
            raise ConfigError("expected a table [roles] of column = role", path=path, column="roles")
        valid = sorted(r.value for r in Role)
        for col, value in raw_roles.items():
            try:
                roles[str(col)] = Role(str(value))
            except ValueError:
                raise ConfigError(f"unknown role {value!r}; expected one of {valid}", path=path,
                                  column=f"roles.{col}") from None
        segments = data.get("segments")
        if segments is not None and (not isinstance(segments, list) or not all(isinstance(s, str) for s in segments)):
            raise ConfigError("expected a list of column names", path=path, column="segments")
        pc = data.get("positive_class")
        if pc is not None and not isinstance(pc, str | int | float):
            raise ConfigError(f"expected a string or number, got {pc!r}", path=path, column="positive_class")
        try:
            window = parse_duration(data.get("window", "1h"), field_name="window")
            delay = data.get("label_delay")
            label_delay = None if delay is None else parse_duration(delay, field_name="label_delay")
        except ConfigError as e:
            raise ConfigError(str(e), path=path) from e
        fallback = data.get("fallback_score")
        if fallback is not None and (isinstance(fallback, bool) or not isinstance(fallback, int | float)):
            raise ConfigError(f"expected a number, got {fallback!r}", path=path, column="fallback_score")
        thresholds = data.get("thresholds", {})
        if not isinstance(thresholds, Mapping):
            raise ConfigError("expected a table [thresholds] of name = number", path=path, column="thresholds")
        for key, value in thresholds.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"expected a number, got {value!r}", path=path, column=f"thresholds.{key}")
        name = data.get("name")
        return cls(name=None if name is None else str(name), roles=roles,
                   segments=None if segments is None else tuple(segments), positive_class=pc,
                   window=window, label_delay=label_delay,
                   fallback_score=None if fallback is None else float(fallback),
                   thresholds={str(k): float(v) for k, v in thresholds.items()})

    @classmethod
    def from_toml(cls, path: str | Path) -> ModelConfig:
        """Read a config from a TOML file.

        Raises
        ------
        ConfigError
            When the file is not valid TOML or a value is not of the expected kind.
        """
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError("config file not found", path=p) from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"not valid TOML: {e}", path=p) from e
        return cls.from_mapping(data, path=p)
