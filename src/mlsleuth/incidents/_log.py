"""Incidents kept beside a store's data, one JSON file each, so they survive a restart."""

from __future__ import annotations

import json
import os
import tempfile
import threading
import urllib.parse
from pathlib import Path

from mlsleuth.errors import ReadError, StoreError
from mlsleuth.incidents._records import Incident

__all__ = ["IncidentLog"]


class IncidentLog:
    """The incidents of a store: ``<store>/incidents/<model>/<id>.json``, written atomically.

    Parameters
    ----------
    folder
        The store's folder (a :class:`~mlsleuth.store.LocalStore`'s ``path``); ``None`` keeps them in memory.

    Examples
    --------
    >>> log = IncidentLog(None)
    >>> log.all()
    []
    """

    def __init__(self, folder: str | Path | None) -> None:
        self.root = None if folder is None else Path(folder) / "incidents"
        self._memory: dict[str, Incident] = {}
        self._lock = threading.Lock()
        if self.root is not None:
            for path in sorted(self.root.glob("*/*.json")):
                self._memory[self._key_of(path)] = self._read(path)

    @staticmethod
    def _key(model: str, ident: str) -> str:
        return f"{model}\x00{ident}"

    def _key_of(self, path: Path) -> str:
        return self._key(urllib.parse.unquote(path.parent.name), path.stem)

    @staticmethod
    def _read(path: Path) -> Incident:
        try:
            return Incident.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ReadError(f"not a readable incident record ({exc}); move it aside to start without it",
                            path=path) from exc

    def put(self, incident: Incident) -> None:
        """Keep (or replace) an incident; on disk the file is replaced in one step."""
        with self._lock:
            self._memory[self._key(incident.model, incident.id)] = incident
            if self.root is None:
                return
            folder = self.root / urllib.parse.quote(incident.model, safe="")
            try:
                folder.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    json.dump(incident.to_dict(), f)
                os.replace(tmp, folder / f"{incident.id}.json")
            except OSError as exc:
                raise StoreError(f"{folder}: could not write incident {incident.id}: {exc}") from exc

    def get(self, model: str, ident: str) -> Incident | None:
        """One incident, or None."""
        with self._lock:
            return self._memory.get(self._key(model, ident))

    def all(self, model: str | None = None) -> list[Incident]:
        """Every incident (of ``model``), most recently opened first."""
        with self._lock:
            out = [i for i in self._memory.values() if model is None or i.model == model]
        return sorted(out, key=lambda i: (i.opened_at, i.id), reverse=True)

    def active(self, model: str) -> list[Incident]:
        """The model's open or acknowledged incidents, most recent first."""
        return [i for i in self.all(model) if i.is_active]
