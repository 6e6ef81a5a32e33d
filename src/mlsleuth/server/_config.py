"""Server settings: the store, bearer tokens with scopes, size limits, alert rules and webhooks.

Read from a TOML file (``mlsleuth serve --config``) and the environment (``MLSLEUTH_TOKENS``)::

    store = "/var/lib/mlsleuth"
    engine = "duckdb"          # or "spark" (then spark_master = "spark://host:7077")
    max_body_mb = 64
    public_url = "http://mlsleuth.internal:8000"

    [limits]                   # every request past one is refused with a 4xx and nothing is stored
    max_columns = 1000         # fields per row and columns per batch (nested fields count)
    max_rows = 1000000         # rows per request, after decompression
    max_decoded_mb = 256       # bytes per request after decompression (Arrow buffers)
    max_string_bytes = 65536   # one string value or field name
    max_depth = 16             # JSON nesting (the array of rows and each row object count 2)
    min_year = 1970            # timestamps (ts, label_ts, event ts) must fall in [min_year, max_year]
    max_year = 2200

    [auth]
    session_hours = 12         # how long a browser login lasts
    cookie_secure = "auto"     # Secure on the session cookie: "auto" (when served over https), true or false
    max_failures = 10          # failed authentications per client address per window, then 429
    failure_window_seconds = 60

    [tokens]
    "s3cret-reader" = "read"
    "s3cret-writer" = "write"

    [diagnosis.models]         # scoring models for server-side diagnosis, named by the operator only
    fraud = "/etc/mlsleuth/fraud.joblib"       # or "my_package.scoring:score"

    [alerts]
    interval_seconds = 60
    webhooks = ["https://hooks.slack.com/services/..."]

    [[alerts.rules]]
    name = "fraud-score-drift"
    model = "fraud"
    monitor = "prediction_drift"
    column = "score"
    threshold = 0.0
    window = "1h"
    lookback = "1d"
    cooldown = "6h"

    [incidents]                # automatic detection: one incident per root cause (hand-written rules stay an option)
    enabled = true
    interval_seconds = 60
    lookback = "3d"
    resolve_after = "6h"
    join_hours = 6
    webhooks = []              # default: the alerts' webhooks
    format = "slack"           # or "json"
"""

from __future__ import annotations

import enum
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlsleuth.errors import ConfigError
from mlsleuth.monitors import MONITORS, parse_window
from mlsleuth.store import EngineKind

if TYPE_CHECKING:  # the config is read before the diagnosis (which the policy's module imports) is needed
    from mlsleuth.incidents import IncidentPolicy

__all__ = ["AlertRule", "AuthSettings", "IncidentSettings", "Limits", "Scope", "ServerConfig", "load_config",
           "parse_tokens"]

#: The environment variable holding ``token:scope`` pairs separated by commas.
TOKENS_ENV = "MLSLEUTH_TOKENS"


class Scope(enum.Enum):
    """What a bearer token may do: ``read`` (queries, pages, metrics) or ``write`` (ingest too)."""

    READ = "read"
    WRITE = "write"

    def allows(self, needed: Scope) -> bool:
        """Whether a token of this scope may call a route that needs ``needed`` (write implies read)."""
        return self is Scope.WRITE or needed is Scope.READ

    @classmethod
    def parse(cls, value: str, *, where: str) -> Scope:
        """A scope from its name; ``where`` names the setting in the error."""
        try:
            return cls(value.strip().lower())
        except ValueError:
            raise ConfigError(f"{where}: a token scope is 'read' or 'write', got {value!r}", column=where) from None


def parse_tokens(text: str, *, where: str = TOKENS_ENV) -> dict[str, Scope]:
    """Parse ``"tokA:read,tokB:write"`` into a token -> scope map.

    Examples
    --------
    >>> parse_tokens("a:read, b:write")["b"].value
    'write'
    """
    out: dict[str, Scope] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        token, sep, scope = part.rpartition(":")
        if not sep or not token:
            raise ConfigError(f"{where}: expected token:scope pairs separated by commas, got {part!r}", column=where)
        out[token] = Scope.parse(scope, where=where)
    return out


def _duration(value: Any, *, where: str) -> timedelta:
    try:
        return timedelta(seconds=parse_window(value))
    except Exception as exc:  # parse_window raises library errors; name the setting
        raise ConfigError(f"{where}: expected a duration such as '15min', '1h', '1d' or seconds, got {value!r}",
                          column=where) from exc


@dataclass(frozen=True)
class AlertRule:
    """One alert rule: fire when a monitor reports a finding at or above ``threshold``.

    Parameters
    ----------
    name
        Unique name; appears in notifications and in ``/metrics``.
    model
        The model whose requests are watched.
    monitor
        A monitor name (``feature_drift``, ``prediction_drift``, ``data_quality``, ...).
    threshold
        The finding's value must reach this (``0`` fires on every finding the monitor reports).
    column
        Only findings of this column (``None``: any column).
    window
        Monitor window size.
    lookback
        How far back from the latest request each evaluation looks.
    segment
        Segment columns examined by the monitor (findings of any of their values fire).
    cooldown
        Minimum time between two notifications of the same rule and column.
    """

    name: str
    model: str
    monitor: str
    threshold: float = 0.0
    column: str | None = None
    window: timedelta = timedelta(hours=1)
    lookback: timedelta = timedelta(days=1)
    segment: tuple[str, ...] = ()
    cooldown: timedelta = timedelta(hours=6)

    def __post_init__(self) -> None:
        names = sorted(m.name for m in MONITORS)
        if self.monitor not in names:
            raise ConfigError(f"alert rule {self.name!r}: unknown monitor {self.monitor!r}; expected one of "
                              f"{names}", column=f"alerts.rules.{self.name}.monitor")
        if self.lookback < self.window:
            raise ConfigError(f"alert rule {self.name!r}: lookback {self.lookback} is shorter than window "
                              f"{self.window}", column=f"alerts.rules.{self.name}.lookback")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, index: int = 0) -> AlertRule:
        """A rule from its TOML table; errors name ``alerts.rules[index].field``."""
        where = f"alerts.rules[{index}]"
        known = {"name", "model", "monitor", "threshold", "column", "window", "lookback", "segment", "cooldown"}
        extra = sorted(set(data) - known)
        if extra:
            raise ConfigError(f"{where}: unknown settings {extra}; expected some of {sorted(known)}", column=where)
        for key in ("name", "model", "monitor"):
            if not isinstance(data.get(key), str) or not data[key]:
                raise ConfigError(f"{where}.{key}: expected a non-empty string, got {data.get(key)!r}",
                                  column=f"{where}.{key}")
        seg = data.get("segment", ())
        seg = (seg,) if isinstance(seg, str) else tuple(seg)
        try:
            threshold = float(data.get("threshold", 0.0))
        except (TypeError, ValueError):
            raise ConfigError(f"{where}.threshold: expected a number, got {data.get('threshold')!r}",
                              column=f"{where}.threshold") from None
        return cls(
            name=data["name"], model=data["model"], monitor=data["monitor"], threshold=threshold,
            column=data.get("column"),
            window=_duration(data.get("window", "1h"), where=f"{where}.window"),
            lookback=_duration(data.get("lookback", "1d"), where=f"{where}.lookback"),
            segment=tuple(str(s) for s in seg),
            cooldown=_duration(data.get("cooldown", "6h"), where=f"{where}.cooldown"),
        )


@dataclass(frozen=True)
class AuthSettings:
    """Browser sessions and the brake on failed authentication.

    Parameters
    ----------
    session_seconds
        How long a browser session opened at ``/login`` lasts.
    cookie_secure
        ``Secure`` on the session cookie: ``None`` sets it when the request came over https (or
        ``public_url`` is https); ``True``/``False`` force it.
    max_failures
        Failed authentications (unknown tokens, as bearer or in the login form) a client address
        may make per window;
        past it every attempt from that address answers 429 until the window has passed.
    failure_window
        The window, in seconds.

    Examples
    --------
    >>> AuthSettings().max_failures
    10
    """

    session_seconds: float = 12 * 3600.0
    cookie_secure: bool | None = None
    max_failures: int = 10
    failure_window: float = 60.0

    def __post_init__(self) -> None:
        if self.session_seconds <= 0 or self.failure_window <= 0 or self.max_failures < 1:
            raise ConfigError(f"auth: session_hours, failure_window_seconds and max_failures must be positive, got "
                              f"{self.session_seconds / 3600:g}, {self.failure_window:g} and {self.max_failures}",
                              column="auth")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> AuthSettings:
        """Settings from the ``[auth]`` TOML table; errors name the setting."""
        known = {"session_hours", "cookie_secure", "max_failures", "failure_window_seconds"}
        extra = sorted(set(data) - known)
        if extra:
            raise ConfigError(f"auth: unknown settings {extra}; expected some of {sorted(known)}", column="auth")
        secure = data.get("cookie_secure", "auto")
        if secure not in ("auto", True, False):
            raise ConfigError(f"auth.cookie_secure: expected \"auto\", true or false, got {secure!r}",
                              column="auth.cookie_secure")
        try:
            return cls(session_seconds=float(data.get("session_hours", 12)) * 3600,
                       cookie_secure=None if secure == "auto" else bool(secure),
                       max_failures=int(data.get("max_failures", 10)),
                       failure_window=float(data.get("failure_window_seconds", 60)))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"auth: session_hours, max_failures and failure_window_seconds must be numbers: {exc}",
                              column="auth") from exc


@dataclass(frozen=True)
class Limits:
    """What one ingest request may hold; past any of these it is refused (413 or 422), nothing stored.

    The body size limit (``max_body_bytes``) counts bytes on the wire; these count what the body
    holds once decompressed and parsed, so a small compressed body cannot expand without bound.

    Parameters
    ----------
    max_columns
        Fields of one JSON row, and columns of one batch (fields nested in structs count).
    max_rows
        Rows of one request (after Arrow decompression).
    max_decoded_bytes
        Bytes of an Arrow body once its buffers are decompressed.
    max_string_bytes
        Length of one string value or field name.
    max_depth
        Nesting depth of a JSON body (the array of rows is level 1, each row object level 2) or of
        an Arrow column type.
    min_year, max_year
        Timestamps (``ts``, ``label_ts``, event ``ts``) must fall in these years, inclusive.

    Examples
    --------
    >>> Limits().max_columns
    1000
    """

    max_columns: int = 1000
    max_rows: int = 1_000_000
    max_decoded_bytes: int = 256 * 1024 * 1024
    max_string_bytes: int = 64 * 1024
    max_depth: int = 16
    min_year: int = 1970
    max_year: int = 2200

    def __post_init__(self) -> None:
        for name in ("max_columns", "max_rows", "max_decoded_bytes", "max_string_bytes", "max_depth"):
            if getattr(self, name) < 1:
                raise ConfigError(f"limits.{name} must be positive, got {getattr(self, name)}",
                                  column=f"limits.{name}")
        if self.max_depth < 2:
            raise ConfigError(f"limits.max_depth must be at least 2 (an array of row objects), got {self.max_depth}",
                              column="limits.max_depth")
        if not 1 <= self.min_year <= self.max_year <= 9998:
            raise ConfigError(f"limits: expected 1 <= min_year <= max_year <= 9998, got {self.min_year} and "
                              f"{self.max_year}", column="limits.min_year")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Limits:
        """Limits from the ``[limits]`` TOML table (``max_decoded_mb`` in MiB); errors name the setting."""
        known = {"max_columns", "max_rows", "max_decoded_mb", "max_string_bytes", "max_depth", "min_year",
                 "max_year"}
        extra = sorted(set(data) - known)
        if extra:
            raise ConfigError(f"limits: unknown settings {extra}; expected some of {sorted(known)}", column="limits")
        out: dict[str, int] = {}
        for key, value in data.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"limits.{key}: expected a number, got {value!r}", column=f"limits.{key}")
            if key == "max_decoded_mb":
                out["max_decoded_bytes"] = int(value * 1024 * 1024)
            else:
                out[key] = int(value)
        return cls(**out)


@dataclass(frozen=True)
class IncidentSettings:
    """Automatic incident detection: how often it runs, its policy, where it posts.

    Parameters
    ----------
    enabled
        Run detection on a schedule (``POST /v1/incidents/check`` runs it on demand either way).
    interval
        Seconds between scheduled runs; each checks the models whose latest request moved since their last check.
    lookback, resolve_after, join_hours
        The policy's fields (see :class:`~mlsleuth.incidents.IncidentPolicy`).
    webhooks
        URLs that get each opening, cause change and resolution; ``None``: the alerts' webhooks.
    format
        ``"slack"`` (``{"text": ...}``) or ``"json"`` (the body of :func:`~mlsleuth.incidents.incident_json`).

    Examples
    --------
    >>> IncidentSettings().policy().lookback
    datetime.timedelta(days=3)
    """

    enabled: bool = True
    interval: float = 60.0
    lookback: timedelta = timedelta(days=3)
    resolve_after: timedelta = timedelta(hours=6)
    join_hours: float = 6.0
    webhooks: tuple[str, ...] | None = None
    format: str = "slack"

    def __post_init__(self) -> None:
        if self.format not in ("slack", "json"):
            raise ConfigError(f"incidents.format: expected \"slack\" or \"json\", got {self.format!r}",
                              column="incidents.format")
        if not math.isfinite(self.interval) or self.interval <= 0:
            raise ConfigError(f"incidents.interval_seconds: expected a positive number of seconds, got "
                              f"{self.interval!r} (enabled = false turns the schedule off)",
                              column="incidents.interval_seconds")
        for key, value in (("lookback", self.lookback), ("resolve_after", self.resolve_after)):
            if value <= timedelta(0):
                raise ConfigError(f"incidents.{key}: expected a positive duration, got {value}",
                                  column=f"incidents.{key}")
        if not math.isfinite(self.join_hours) or self.join_hours < 0:
            raise ConfigError(f"incidents.join_hours: expected a non-negative number of hours, got "
                              f"{self.join_hours!r}", column="incidents.join_hours")
        for url in self.webhooks or ():
            if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                raise ConfigError(f"incidents.webhooks: expected http(s) URLs, got {url!r}",
                                  column="incidents.webhooks")

    def policy(self) -> IncidentPolicy:
        """The tracker's policy."""
        from mlsleuth.incidents import IncidentPolicy

        return IncidentPolicy(lookback=self.lookback, join_hours=self.join_hours, resolve_after=self.resolve_after)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> IncidentSettings:
        """Settings from the ``[incidents]`` TOML table; errors name the key."""
        known = {"enabled", "interval_seconds", "lookback", "resolve_after", "join_hours", "webhooks", "format"}
        extra = sorted(set(data) - known)
        if extra:
            raise ConfigError(f"incidents: unknown settings {extra}; expected some of {sorted(known)}",
                              column="incidents")
        enabled = data.get("enabled", True)
        if not isinstance(enabled, bool):
            raise ConfigError(f"incidents.enabled: expected true or false, got {enabled!r}", column="incidents.enabled")
        numbers: dict[str, float] = {}
        for key, default in (("interval_seconds", 60.0), ("join_hours", 6.0)):
            value = data.get(key, default)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"incidents.{key}: expected a number, got {value!r}", column=f"incidents.{key}")
            numbers[key] = float(value)
        hooks = data.get("webhooks")
        if isinstance(hooks, str):
            hooks = [hooks]
        if hooks is not None and not isinstance(hooks, list):
            raise ConfigError(f"incidents.webhooks: expected a list of URLs, got {hooks!r}",
                              column="incidents.webhooks")
        fmt = data.get("format", "slack")
        return cls(enabled=enabled, interval=numbers["interval_seconds"],
                   lookback=_duration(data.get("lookback", "3d"), where="incidents.lookback"),
                   resolve_after=_duration(data.get("resolve_after", "6h"), where="incidents.resolve_after"),
                   join_hours=numbers["join_hours"], webhooks=None if hooks is None else tuple(hooks),
                   format=fmt if isinstance(fmt, str) else repr(fmt))


@dataclass(frozen=True)
class ServerConfig:
    """Everything ``mlsleuth serve`` needs.

    Parameters
    ----------
    store
        The store folder (created when missing).
    tokens
        Bearer token -> scope. Empty means no token is accepted: every authenticated route answers 401.
    max_body_bytes
        Largest request body accepted; larger ones get 413.
    rules
        Alert rules.
    webhooks
        URLs that get each alert as Slack-compatible JSON ``{"text": ...}``.
    alert_interval
        Seconds between scheduled evaluations of the rules; ``0`` disables the schedule.
    public_url
        The base URL put in alert links (default: the host and port served).
    engine
        The query engine (``None``: ``$MLSLEUTH_ENGINE``, else the store's ``mlsleuth.toml``, else DuckDB).
    spark_master
        With Spark: the master URL.
    auth
        Browser sessions and the limit on failed authentication (see :class:`AuthSettings`).
    limits
        What one ingest request may hold once decompressed and parsed (see :class:`Limits`).
    models
        Model name -> the scoring model that server-side diagnosis may load for it: a joblib file
        the operator names (never one inside the store, which HTTP requests write to) or a
        ``module:function`` entry point. Nothing read from the store is ever unpickled.
    incidents
        Automatic incident detection (see :class:`IncidentSettings`).

    Examples
    --------
    >>> ServerConfig(store=Path("s"), tokens={"t": Scope.READ}).max_body_bytes
    67108864
    """

    store: Path
    tokens: Mapping[str, Scope] = field(default_factory=dict)
    max_body_bytes: int = 64 * 1024 * 1024
    rules: tuple[AlertRule, ...] = ()
    webhooks: tuple[str, ...] = ()
    alert_interval: float = 60.0
    public_url: str = ""
    engine: EngineKind | None = None
    spark_master: str | None = None
    models: Mapping[str, str] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)
    auth: AuthSettings = field(default_factory=AuthSettings)
    incidents: IncidentSettings = field(default_factory=IncidentSettings)

    def __post_init__(self) -> None:
        if self.max_body_bytes < 1:
            raise ConfigError(f"max_body_bytes must be positive, got {self.max_body_bytes}", column="max_body_mb")
        names = [r.name for r in self.rules]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"alert rule names must be unique; repeated: {dupes}", column="alerts.rules")
        for url in self.webhooks:
            if not url.startswith(("http://", "https://")):
                raise ConfigError(f"alerts.webhooks: expected http(s) URLs, got {url!r}", column="alerts.webhooks")
        store = self.store.resolve()
        for name, spec in self.models.items():
            where = f"diagnosis.models.{name}"
            if not isinstance(spec, str) or not spec:
                raise ConfigError(f"{where}: expected a file path or a module:function entry point, got {spec!r}",
                                  column=where)
            if not _is_entry_point(spec) and Path(spec).expanduser().resolve().is_relative_to(store):
                raise ConfigError(f"{where}: {spec!r} lies inside the store, which HTTP requests write to; "
                                  "keep scoring models outside the store", column=where)


def _is_entry_point(spec: str) -> bool:
    """``module:function`` rather than a file (the rule :func:`mlsleuth.diagnosis.load_model` applies)."""
    return ":" in spec and not Path(spec).exists() and not spec.startswith(("/", "."))


def load_config(path: str | Path | None = None, *, store: str | Path | None = None,
                environ: Mapping[str, str] | None = None, engine: EngineKind | str | None = None,
                spark_master: str | None = None) -> ServerConfig:
    """Read the TOML config (optional) and the environment.

    Tokens come from the file's ``[tokens]`` table and from ``MLSLEUTH_TOKENS`` (which wins on the
    same token). ``store`` overrides the file's ``store``; the default is ``./.mlsleuth``.
    ``engine`` and ``spark_master`` (``mlsleuth serve --engine``) override the file's; without
    either, ``$MLSLEUTH_ENGINE`` and the store's own config decide when the store is opened.
    """
    env = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"{p}: cannot read the server config: {exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{p}: not valid TOML: {exc}") from exc
    tokens = {}
    for tok, scope in dict(data.get("tokens", {})).items():
        tokens[str(tok)] = Scope.parse(str(scope), where=f"tokens.{tok}")
    tokens.update(parse_tokens(env.get(TOKENS_ENV, "")))
    alerts = dict(data.get("alerts", {}))
    rules = tuple(AlertRule.from_mapping(r, index=i) for i, r in enumerate(alerts.get("rules", [])))
    hooks = alerts.get("webhooks", [])
    diag = data.get("diagnosis", {})
    models = diag.get("models", {}) if isinstance(diag, dict) else None
    if not isinstance(models, dict):
        raise ConfigError("diagnosis.models: expected a table of model name = file path or module:function",
                          column="diagnosis.models")
    try:
        max_mb = float(data.get("max_body_mb", 64))
        interval = float(alerts.get("interval_seconds", 60))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"max_body_mb and alerts.interval_seconds must be numbers: {exc}") from exc
    return ServerConfig(
        store=Path(store if store is not None else data.get("store", ".mlsleuth")),
        tokens=tokens, max_body_bytes=int(max_mb * 1024 * 1024), rules=rules,
        webhooks=tuple([hooks] if isinstance(hooks, str) else hooks), alert_interval=interval,
        public_url=str(data.get("public_url", "")),
        engine=(EngineKind.parse(engine, where="--engine") if engine is not None
                else EngineKind.parse(data["engine"], where="engine") if data.get("engine") is not None else None),
        spark_master=spark_master or (None if data.get("spark_master") is None else str(data["spark_master"])),
        models={str(k): v for k, v in models.items()},
        limits=Limits.from_mapping(dict(data.get("limits", {}))),
        auth=AuthSettings.from_mapping(dict(data.get("auth", {}))),
        incidents=IncidentSettings.from_mapping(_table(data, "incidents")),
    )


def _table(data: Mapping[str, Any], key: str) -> dict[str, Any]:
    """The TOML table ``key`` (empty when absent); anything else is an error naming it."""
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: expected a table ([{key}]), got {value!r}", column=key)
    return value
