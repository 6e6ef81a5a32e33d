"""The messages an incident change sends: a Slack-style text and a generic JSON body."""

from __future__ import annotations

from typing import Any

from mlsleuth.incidents._records import UpdateKind
from mlsleuth.incidents._tracker import IncidentChange

__all__ = ["incident_json", "incident_text"]

_HEAD = {UpdateKind.OPENED: ":rotating_light: mlsleuth incident opened",
         UpdateKind.CAUSE_CHANGED: ":mag: mlsleuth incident cause changed",
         UpdateKind.RESOLVED: ":white_check_mark: mlsleuth incident resolved"}


def incident_text(change: IncidentChange, *, link: str = "") -> str:
    """The message of one change, Slack-compatible (``{"text": incident_text(...)}``)."""
    i = change.incident
    head = _HEAD.get(change.kind, f"mlsleuth incident {change.kind.value}")
    text = f"{head} for model {i.model} ({i.id}): {i.top.sentence()}."
    if change.kind is UpdateKind.CAUSE_CHANGED and change.previous is not None:
        text += f" It was {change.previous.cause.value.replace('_', ' ')}."
    if change.kind is not UpdateKind.RESOLVED and i.top.first_step:
        text += f" First step: {i.top.first_step}"
    if link:
        text += f" <{link}|open the incident>"
    return text


def incident_json(change: IncidentChange, *, link: str = "") -> dict[str, Any]:
    """A generic JSON body: ``event`` (``incident.opened`` ...), the incident, its link and the text."""
    body: dict[str, Any] = {"event": f"incident.{change.kind.value}", "incident": change.incident.to_dict(),
                            "link": link or None, "text": incident_text(change, link=link)}
    if change.previous is not None:
        body["previous"] = change.previous.to_dict()
    return body
