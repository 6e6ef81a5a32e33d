"""Alert rules evaluated against the store; notifications to webhooks with de-duplication and cooldown."""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from mlsleuth.monitors import MONITORS, Finding, Segment, run_monitors
from mlsleuth.server._config import AlertRule
from mlsleuth.server._views import model_reference
from mlsleuth.store import LocalStore

__all__ = ["Alert", "AlertEngine", "AlertState", "post_webhook"]

log = logging.getLogger("mlsleuth.server")

#: How far back a diagnosis linked from an alert looks before the alert.
DIAGNOSIS_SPAN = timedelta(days=7)


@dataclass(frozen=True)
class Alert:
    """One notification: a rule fired on a column.

    Attributes
    ----------
    rule, model, monitor, column
        What fired.
    segment
        The segment of the strongest finding (``()`` for all traffic).
    value, threshold
        The strongest finding's value and the rule's threshold.
    window_start, window_end
        The strongest finding's window.
    reason
        The finding's sentence.
    at
        The evaluation clock (the model's latest request) when it fired.
    link
        The dashboard's diagnosis page for the model over the week before ``at``.
    """

    rule: str
    model: str
    monitor: str
    column: str | None
    segment: Segment
    value: float
    threshold: float
    window_start: datetime
    window_end: datetime
    reason: str
    at: datetime
    link: str

    def text(self) -> str:
        """The Slack-compatible message text."""
        where = f" on {self.column}" if self.column else ""
        seg = (" in " + ", ".join(f"{k}={v}" for k, v in self.segment)) if self.segment else ""
        return (f":rotating_light: mlsleuth alert {self.rule}: {self.monitor}{where}{seg} for model {self.model} "
                f"({self.value:.4g} >= {self.threshold:.4g}, window {self.window_start:%Y-%m-%d %H:%M} UTC). "
                f"{self.reason} Diagnosis: <{self.link}|open the diagnosis>")

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict."""
        return {"rule": self.rule, "model": self.model, "monitor": self.monitor, "column": self.column,
                "segment": dict(self.segment), "value": self.value, "threshold": self.threshold,
                "window_start": self.window_start.isoformat(), "window_end": self.window_end.isoformat(),
                "reason": self.reason, "at": self.at.isoformat(), "link": self.link}


@dataclass
class AlertState:
    """What the engine remembers of one rule and column between evaluations."""

    firing: bool = False
    last_sent: datetime | None = None
    last_alert: Alert | None = None
    sent: int = 0


def post_webhook(url: str, payload: Mapping[str, object], *, timeout: float = 5.0) -> None:
    """POST ``payload`` as JSON to ``url`` (no proxy); raises ``OSError`` on failure."""
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(req, timeout=timeout) as resp:
        resp.read()


@dataclass
class _Status:
    evaluations: int = 0
    notify_failures: int = 0
    skipped: dict[str, str] = field(default_factory=dict)


class AlertEngine:
    """Evaluates alert rules over a store and notifies webhooks.

    An alert is keyed by rule and column. It is sent when the key starts firing and its last
    notification is older than the rule's cooldown; while it keeps firing it is not sent again
    (de-duplication). The evaluation clock is the model's latest request, so replayed or delayed
    traffic is judged by its own time.

    Parameters
    ----------
    store
        The store to read.
    rules
        The rules.
    webhooks
        URLs to notify.
    base_url
        The dashboard's base URL for alert links.
    notify
        Called as ``notify(url, payload)`` for each webhook (default :func:`post_webhook`).
    """

    def __init__(self, store: LocalStore, rules: Sequence[AlertRule], webhooks: Sequence[str] = (), *,
                 base_url: str = "", notify: Callable[[str, Mapping[str, object]], None] | None = None) -> None:
        self.store = store
        self.rules = tuple(rules)
        self.webhooks = tuple(webhooks)
        self.base_url = base_url.rstrip("/")
        self._notify = notify or post_webhook
        self.states: dict[tuple[str, str | None], AlertState] = {}
        self.status = _Status()
        self._lock = threading.Lock()

    def _link(self, model: str, at: datetime) -> str:
        q = urllib.parse.urlencode({"since": (at - DIAGNOSIS_SPAN).isoformat(), "until": at.isoformat()})
        return f"{self.base_url}/models/{urllib.parse.quote(model)}/incident?{q}"

    def _clock(self, model: str) -> datetime | None:
        try:
            return self.store.status().model(model).last_ts
        except KeyError:
            return None

    def _findings(self, rule: AlertRule, clock: datetime) -> list[Finding]:
        ref = model_reference(self.store, rule.model)
        if ref is None:
            self.status.skipped[rule.name] = f"no stored reference for model {rule.model!r}"
            return []
        monitor = next(m for m in MONITORS if m.name == rule.monitor)()
        # until is exclusive: one microsecond past the latest request keeps it in.
        report = run_monitors(self.store, ref, [monitor], window=int(rule.window.total_seconds()),
                              segment=rule.segment, model=rule.model, since=clock - rule.lookback,
                              until=clock + timedelta(microseconds=1))
        self.status.skipped.pop(rule.name, None)
        for name, reason in report.skipped:
            self.status.skipped[rule.name] = f"{name}: {reason}"
        return [f for f in report.findings
                if (rule.column is None or f.column == rule.column) and f.value >= rule.threshold]

    def evaluate(self, now: datetime | None = None) -> tuple[Alert, ...]:
        """Evaluate every rule once; returns the alerts sent (after de-duplication and cooldown).

        Parameters
        ----------
        now
            The evaluation clock (default: each model's latest request).
        """
        sent: list[Alert] = []
        with self._lock:
            self.status.evaluations += 1
            for rule in self.rules:
                clock = now or self._clock(rule.model)
                if clock is None:
                    self.status.skipped[rule.name] = f"no requests of model {rule.model!r} yet"
                    continue
                by_column: dict[str | None, list[Finding]] = {}
                for f in self._findings(rule, clock):
                    by_column.setdefault(f.column, []).append(f)
                for key, st in self.states.items():
                    if key[0] == rule.name and key[1] not in by_column:
                        st.firing = False
                for column, fs in by_column.items():
                    st = self.states.setdefault((rule.name, column), AlertState())
                    was = st.firing
                    st.firing = True
                    if was or (st.last_sent is not None and clock - st.last_sent < rule.cooldown):
                        continue
                    top = max(fs, key=lambda f: (f.severity.rank, f.value))
                    alert = Alert(rule.name, rule.model, rule.monitor, column, top.segment, top.value,
                                  rule.threshold, top.window_start, top.window_end, top.reason, clock,
                                  self._link(rule.model, clock))
                    st.last_sent, st.last_alert = clock, alert
                    st.sent += 1
                    sent.append(alert)
        for alert in sent:
            self._send(alert)
        return tuple(sent)

    def _send(self, alert: Alert) -> None:
        payload = {"text": alert.text()}
        for url in self.webhooks:
            try:
                self._notify(url, payload)
            except (OSError, urllib.error.URLError) as exc:
                self.status.notify_failures += 1
                log.warning("mlsleuth: could not notify %s of alert %s: %s", url, alert.rule, exc)

    def alerts(self) -> list[Alert]:
        """The latest alert of every rule and column, most recent first."""
        out = [st.last_alert for st in self.states.values() if st.last_alert is not None]
        return sorted(out, key=lambda a: a.at, reverse=True)
