"""Incidents as they happen: checks of recent traffic folded into one incident per root cause.

Each check diagnoses a model's recent traffic (:func:`~mlsleuth.diagnosis.diagnose_store`); a material
finding joins the open incident whose root cause it shares, or opens one; an incident no check shows any
more resolves. Incidents are kept beside the store's data, so they survive a restart, and each opening,
cause change and resolution is one message.
"""

from mlsleuth.incidents._log import IncidentLog
from mlsleuth.incidents._notify import incident_json, incident_text
from mlsleuth.incidents._records import Incident, IncidentCause, IncidentStatus, IncidentUpdate, UpdateKind
from mlsleuth.incidents._tracker import IncidentChange, IncidentPolicy, IncidentTracker

__all__ = [
    "Incident",
    "IncidentCause",
    "IncidentChange",
    "IncidentLog",
    "IncidentPolicy",
    "IncidentStatus",
    "IncidentTracker",
    "IncidentUpdate",
    "UpdateKind",
    "incident_json",
    "incident_text",
]
